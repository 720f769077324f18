"""Measuring a run: one definition of peak memory, and the hardware line every table states.

Peak memory (`peak_memory_mb`), everywhere in lab:
- CUDA: `torch.cuda.max_memory_allocated` (tensor bytes the caching allocator handed out) since
  the last `reset_peak_memory`.
- CPU: the process's resident-set high-water mark (VmHWM from /proc/self/status) since the last
  `reset_peak_memory`, which sets it back to the RSS of that moment (/proc/self/clear_refs, after
  returning freed heap with malloc_trim). It therefore includes what was already resident at the
  reset (interpreter, imports, weights loaded before) and allocator caches; without /proc it falls
  back to ru_maxrss, the peak since the process started.
The engine resets at the start of training, so a run's `peak_memory_mb` is the peak while it trained.
"""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path

import torch


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak: CUDA's allocator counter, or the process's RSS high-water mark (Linux)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so earlier work does not count
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS, see proc(5)
    except OSError:
        pass


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_memory_mb(device: torch.device) -> float:
    """Peak since the last reset_peak_memory (see the module docstring for what it counts)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_mb(device: torch.device) -> float:
    """Memory in use now: CUDA allocated, or the process RSS (VmRSS)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return _status_mb("VmRSS") or 0.0


def peak_memory_kind(device: torch.device) -> str:
    return "CUDA max allocated" if device.type == "cuda" else "process peak RSS (VmHWM)"


def hardware_line(device: torch.device | str | None = None) -> str:
    """'CPU <model>, N cores, T torch threads (torch X)' or the GPU's name."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads (torch {torch.__version__})"


def data_mb() -> float | None:
    """The process's private writable memory now (VmData: heap and anonymous mappings, the thing
    RLIMIT_DATA caps; file mappings are not in it). None without /proc."""
    return _status_mb("VmData")
