"""torch.profiler over training steps: a Chrome/Perfetto trace, a top-ops table and plain rows.

`StepProfiler` is an engine callback (`train(..., callbacks=[StepProfiler(folder, device, steps)])`);
the engine marks each phase of a step with `lab::NAME` spans that the trace shows.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import torch

from labcli import runs

KINETO_NOISE = ("USDT:", "STAGE:")  # libkineto's C++ start/stop lines; no log level silences USDT


@contextlib.contextmanager
def quiet_kineto():
    """Drop libkineto's `USDT:`/`STAGE:` lines that it writes straight to file descriptor 2 when a
    profiler starts and stops; every other line written to stderr meanwhile is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith(KINETO_NOISE)]
            sys.stderr.write("".join(kept))


class StepProfiler:
    """torch.profiler over the first `steps` steps: a Chrome trace and a top-ops table in RUN/profile/."""

    def __init__(self, folder: Path, device: torch.device, steps: int):
        self.folder, self.steps, self.device, self.prof = Path(folder), steps, device, None

    def before_step(self, i: int) -> None:
        if i == 1 and self.steps:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
            self.prof = profile(activities=acts, record_shapes=True, profile_memory=True)
            with quiet_kineto():
                self.prof.__enter__()

    def after_step(self, i: int) -> None:
        if self.prof is None or i != self.steps:
            return

        with quiet_kineto():
            self.prof.__exit__(None, None, None)
        self.folder.mkdir(parents=True, exist_ok=True)
        runs.write_with(self.folder / "trace.json", self.prof.export_chrome_trace)
        sort = "self_cuda_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        averages = self.prof.key_averages()
        table = averages.table(sort_by=sort, row_limit=25)
        runs.write_text(self.folder / "top_ops.md", f"# Top ops over {self.steps} training steps\n\n```\n{table}\n```\n")
        runs.write_json(self.folder / "ops.json", {"steps": self.steps, "device": self.device.type, "ops": op_rows(averages)})
        self.prof = None


def op_rows(averages) -> list[dict]:
    """torch.profiler key averages as plain rows (times in ms, memory in MB), slowest self time first."""
    rows = [{"name": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3, "cpu_total_ms": e.cpu_time_total / 1e3,
             "self_device_ms": getattr(e, "self_device_time_total", 0.0) / 1e3,
             "cpu_memory_mb": e.self_cpu_memory_usage / 2**20} for e in averages]
    return sorted(rows, key=lambda r: -(r["self_device_ms"] or r["self_cpu_ms"]))
