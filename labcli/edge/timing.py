"""Batch-1 latency and size, the same way for every format (torch eager, onnxruntime, ExecuTorch).

`latency(call, inputs)` times `call(x)` one input at a time after a warm-up, in `rounds` rounds of `iters`
calls: p50/p95 over every call, and the spread of the per-round medians (min, max), so a noisy round shows.
Each call is timed twice: wall clock (what a caller waits) and the process's CPU time (what it computed). On a
shared machine a call longer than the scheduler's slice is preempted and its wall time grows with the load; its
CPU time does not, so comparisons between variants use both.
Threads are the caller's business (the bench sets torch, onnxruntime and XNNPACK to one thread).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def latency(call: Callable, inputs: Sequence, rounds: int = 5, iters: int = 100, warmup: int = 20) -> dict:
    for i in range(warmup):
        call(inputs[i % len(inputs)])
    every, medians, cpu, cpu_medians = [], [], [], []
    for _ in range(rounds):
        times, cpu_times = [], []
        for i in range(iters):
            x = inputs[i % len(inputs)]
            start, start_cpu = time.perf_counter(), time.process_time()
            call(x)
            times.append((time.perf_counter() - start) * 1e3)
            cpu_times.append((time.process_time() - start_cpu) * 1e3)
        every += times
        cpu += cpu_times
        medians.append(statistics.median(times))
        cpu_medians.append(statistics.median(cpu_times))
    return {"p50_ms": statistics.median(every), "p95_ms": _p95(every), "round_p50_min_ms": min(medians),
            "round_p50_max_ms": max(medians), "cpu_p50_ms": statistics.median(cpu), "cpu_p95_ms": _p95(cpu),
            "cpu_round_p50_min_ms": min(cpu_medians), "cpu_round_p50_max_ms": max(cpu_medians), "calls": len(every)}


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def file_bytes(path: Path) -> int:
    return Path(path).stat().st_size
