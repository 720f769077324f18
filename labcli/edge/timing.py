"""Batch-1 latency and size, the same way for every format (torch eager, onnxruntime, ExecuTorch).

`latency(call, inputs)` times `call(x)` one input at a time after a warm-up, in `rounds` rounds of `iters`
calls: p50/p95 over every call, and the spread of the per-round medians (min, max), so a noisy round shows.
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
    every, medians = [], []
    for _ in range(rounds):
        times = []
        for i in range(iters):
            x = inputs[i % len(inputs)]
            start = time.perf_counter()
            call(x)
            times.append((time.perf_counter() - start) * 1e3)
        every += times
        medians.append(statistics.median(times))
    every.sort()
    return {"p50_ms": statistics.median(every), "p95_ms": every[min(len(every) - 1, int(0.95 * len(every)))],
            "round_p50_min_ms": min(medians), "round_p50_max_ms": max(medians), "calls": len(every)}


def file_bytes(path: Path) -> int:
    return Path(path).stat().st_size
