"""Memory of optimizer state, measured, and a cap to run under.

Residency: `mincore(2)` reports, for every OS page of a mapping, whether it is resident: for
anonymous memory (tensors) whether it is in RAM, for a file mapping whether the file's page is in
the page cache (mapped by us or not). Counting those pages is a measurement, not a sum of sizes
we allocated.

Cap: `data_cap(extra)` lowers RLIMIT_DATA to the process's private writable memory now (VmData)
plus `extra` bytes. Past it, allocations fail (torch raises "can't allocate memory"). Heap and
anonymous mappings count; shared file mappings (a page file) do not, just as a cgroup would
reclaim clean page-cache pages of a file but can never reclaim anonymous memory without swap.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import resource

import numpy as np
import torch

OS_PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]


def span_resident_bytes(address: int, length: int) -> int:
    """Bytes of RAM under the OS pages overlapping [address, address + length)."""
    if length <= 0:
        return 0
    start = address - address % OS_PAGE
    pages = -(-(address + length - start) // OS_PAGE)
    vec = (ctypes.c_ubyte * pages)()
    if _libc.mincore(start, pages * OS_PAGE, vec) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mincore: {os.strerror(err)}")
    return int((np.frombuffer(vec, dtype=np.uint8) & 1).sum()) * OS_PAGE


def resident_bytes(tensors) -> int:
    """Bytes of RAM under the storages of these CPU tensors, each OS page counted once."""
    spans = []
    for t in tensors:
        if t.device.type != "cpu" or t.numel() == 0:
            continue
        storage = t.untyped_storage()
        lo = storage.data_ptr() - storage.data_ptr() % OS_PAGE
        spans.append((lo, storage.data_ptr() + storage.nbytes()))
    total, end = 0, 0
    for lo, hi in sorted(spans):  # merge overlapping page ranges so a shared page counts once
        lo = max(lo, end)
        if hi > lo:
            total += span_resident_bytes(lo, hi - lo)
            end = -(-hi // OS_PAGE) * OS_PAGE
    return total


def state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor in an optimizer's state (local shards of DTensors)."""
    out = []
    for state in optimizer.state.values():
        for value in state.values():
            if hasattr(value, "to_local"):
                value = value.to_local()
            if torch.is_tensor(value):
                out.append(value)
    return out


@contextlib.contextmanager
def data_cap(extra_bytes: int):
    """Within the block, the process may hold at most VmData-now + `extra_bytes` of private memory."""
    from labcli.eval.measure import data_mb

    now = data_mb()
    if now is None:
        raise OSError("no /proc/self/status: cannot read VmData to set a cap on")
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = int(now * 2**20) + int(extra_bytes)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
