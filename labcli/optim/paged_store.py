"""Fixed-size pages of optimizer state in a backing store, at most a budget of them resident.

A page holds `page_elems` fp32 values of each Adam moment (exp_avg and exp_avg_sq), so one page
is `2 * page_elems * 4` bytes. The backing store is pinned CPU memory when the parameters live on
CUDA (pages travel over PCIe on a side stream), and a memory-mapped file when they live on the
CPU (the file is unlinked at once; touched ranges are dropped from this process with
MADV_DONTNEED, so the kernel, not our RSS, holds them). Resident pages sit in `slots` on the
parameters' device. Eviction is most-recently-used: the optimizer walks the pages in the same
order every step, and for a cyclic walk MRU keeps the most pages resident across steps.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from labcli.errors import UserError

OS_PAGE = mmap.PAGESIZE


class PageStore:
    """`n_pages` pages of two fp32 moments; `budget_bytes` caps the resident slots."""

    def __init__(self, n_pages: int, page_elems: int, device: torch.device, budget_bytes: int,
                 store_dir: str | None = None):
        self.n_pages, self.page_elems, self.device = n_pages, page_elems, device
        self.page_bytes = 2 * page_elems * 4
        n_slots = min(n_pages, budget_bytes // self.page_bytes)
        if n_slots < min(n_pages, 2):
            raise UserError(f"page budget {budget_bytes / 2**20:.3g} MB holds fewer than 2 pages of "
                            f"{self.page_bytes / 2**10:.0f} KB", "raise --page-budget or lower the page size")
        self.budget_bytes = budget_bytes
        self.backing, self._mm = self._make_backing(store_dir)
        self.slots = torch.zeros(n_slots, 2, page_elems, dtype=torch.float32, device=device)
        self.free = list(range(n_slots))
        self.resident: OrderedDict[int, int] = OrderedDict()  # page -> slot, least recently used first
        self.pinned: set[int] = set()  # pages in use or being prefetched: never evicted
        self.pending: dict[int, object] = {}  # page -> CUDA event or Future of its prefetch
        self.dirty: set[int] = set()
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="page-prefetch") if device.type != "cuda" else None
        self.stats = {"page_ins": 0, "page_outs": 0, "hits": 0, "max_resident_bytes": 0}

    # -- backing store -------------------------------------------------------------------------
    def _make_backing(self, store_dir: str | None):
        shape = (2, self.n_pages, self.page_elems)
        if self.device.type == "cuda":
            return torch.zeros(shape, dtype=torch.float32, pin_memory=True), None
        nbytes = max(2 * self.n_pages * self.page_elems * 4, OS_PAGE)
        fd, path = tempfile.mkstemp(prefix="lab-paged-adamw-", suffix=".pages", dir=store_dir)
        try:
            os.ftruncate(fd, nbytes)  # a sparse file: zeros until written
            mm = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
            os.unlink(path)  # the mapping keeps the file alive; nothing is left behind
        flat = torch.frombuffer(mm, dtype=torch.float32, count=2 * self.n_pages * self.page_elems)
        return flat.view(shape), mm

    def _drop_from_rss(self, page: int) -> None:
        """Let the kernel keep page `page` of the file; it no longer counts in our RSS."""
        if self._mm is None or self.page_elems * 4 % OS_PAGE:
            return
        span = self.page_elems * 4
        for half in (0, 1):
            self._mm.madvise(mmap.MADV_DONTNEED, (half * self.n_pages + page) * span, span)

    @property
    def backing_bytes(self) -> int:
        return self.backing.numel() * 4

    @property
    def resident_bytes(self) -> int:
        return len(self.resident) * self.page_bytes

    @property
    def slot_bytes(self) -> int:
        """Bytes allocated for resident pages: fixed at start, never above the budget."""
        return self.slots.numel() * 4

    # -- residency -----------------------------------------------------------------------------
    def _take_slot(self) -> int:
        if self.free:
            return self.free.pop()
        for page in reversed(self.resident):  # most recently used first
            if page not in self.pinned:
                slot = self.resident.pop(page)
                self._write_back(page, slot)
                return slot
        raise RuntimeError("every resident page is pinned: the prefetch window exceeds the budget")

    def _write_back(self, page: int, slot: int) -> None:
        if page in self.dirty:
            for half in (0, 1):  # contiguous copies; synchronous: the slot is reused next
                self.backing[half, page].copy_(self.slots[slot, half])
            self.dirty.discard(page)
            self.stats["page_outs"] += 1
            self._drop_from_rss(page)

    def _load(self, page: int, slot: int) -> None:
        for half in (0, 1):  # pinned -> device copies are asynchronous on CUDA
            self.slots[slot, half].copy_(self.backing[half, page], non_blocking=self.stream is not None)
        self._drop_from_rss(page)

    def prefetch(self, page: int) -> None:
        """Start bringing `page` in, if there is a slot that can be freed for it."""
        if page in self.resident or page in self.pending:
            return
        if not self.free and all(p in self.pinned for p in self.resident):
            return
        slot = self._take_slot()
        self.resident[page] = slot
        self.pinned.add(page)
        self.stats["page_ins"] += 1
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))  # slot's last readers
            with torch.cuda.stream(self.stream):
                self._load(page, slot)
                event = torch.cuda.Event()
                event.record(self.stream)
            self.pending[page] = event
        else:
            self.pending[page] = self.pool.submit(self._load, page, slot)
        self._count()

    def acquire(self, page: int) -> torch.Tensor:
        """The resident (2, page_elems) slot of `page`, loaded if needed; pinned until release."""
        if page in self.resident and page not in self.pending:
            self.stats["hits"] += 1
        elif page not in self.resident:
            slot = self._take_slot()
            self._load(page, slot)
            self.resident[page] = slot
            self.stats["page_ins"] += 1
        waiter = self.pending.pop(page, None)
        if isinstance(waiter, Future):
            waiter.result()
        elif waiter is not None:
            torch.cuda.current_stream(self.device).wait_event(waiter)
        self.pinned.add(page)
        self.resident.move_to_end(page)
        self._count()
        return self.slots[self.resident[page]]

    def release(self, page: int, dirty: bool = True) -> None:
        self.pinned.discard(page)
        if dirty:
            self.dirty.add(page)

    def _count(self) -> None:
        self.stats["max_resident_bytes"] = max(self.stats["max_resident_bytes"], self.resident_bytes)

    def flush(self) -> None:
        """Write every dirty resident page back (before reading the backing store directly)."""
        for page, slot in self.resident.items():
            self._write_back(page, slot)

    def invalidate(self) -> None:
        """Forget resident pages without writing them (after the backing store was overwritten)."""
        for waiter in self.pending.values():
            if isinstance(waiter, Future):
                waiter.result()
        self.pending.clear()
        self.free += list(self.resident.values())
        self.resident.clear()
        self.pinned.clear()
        self.dirty.clear()

    def moment(self, which: int, offset: int, numel: int) -> torch.Tensor:
        """A view of `numel` values of moment `which` (0: exp_avg, 1: exp_avg_sq) in the store."""
        return self.backing[which].view(-1)[offset:offset + numel]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
