"""Where a paged optimizer's state lives: fixed-size pages, at most a budget of them in fast memory.

A page holds `page_elems` fp32 values of each Adam moment (exp_avg and exp_avg_sq), so one page is
`2 * page_elems * 4` bytes. Two stores share one interface (acquire, prefetch, release, moment):

- `FileStore` (parameters on the CPU): the pages live in a file on disk, mapped shared and updated
  in place. Pages touched since the last drop are in the page cache (RAM); once `budget` bytes of
  them have been touched, `drop()` writes the dirty ones to disk (sync_file_range: data only, no
  journal commit), unmaps them (MADV_DONTNEED) and evicts them from the page cache
  (POSIX_FADV_DONTNEED). RAM use is measured with mincore(2) right before every drop, the moment
  it peaks. The file is refused on tmpfs/ramfs, where "on disk" would be RAM.
- `SlotStore` (parameters on CUDA): the backing is pinned host memory, resident pages sit in device
  slots (at most `budget` bytes of them, allocated once) and travel over PCIe on a side stream.
  Eviction is most-recently-used: the optimizer walks the pages in the same order every step, and
  for a cyclic walk MRU keeps the most pages resident across steps. On the CPU it runs with plain
  host memory (tests use it that way; it saves nothing there).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch

from labcli.errors import UserError
from labcli.optim.memory import span_resident_bytes

RAM_FILESYSTEMS = {0x01021994: "tmpfs", 0x858458F6: "ramfs"}  # statfs f_type magic numbers
SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4
_libc = ctypes.CDLL(None, use_errno=True)


def filesystem_type(path: Path) -> str | None:
    """'tmpfs' or 'ramfs' when `path` lives in RAM, else None (also when statfs is unavailable)."""
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type is its first (long) field
    if _libc.statfs(os.fsencode(path), buf) != 0:
        return None
    return RAM_FILESYSTEMS.get(ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF)


def default_page_dir() -> Path:
    from labcli.paths import lab_home

    return lab_home() / "paged-optimizer"


def _check(n_pages: int, budget_bytes: int, page_bytes: int) -> int:
    pages = budget_bytes // page_bytes
    if pages < min(n_pages, 2):
        raise UserError(f"page budget {budget_bytes / 2**20:.3g} MB holds fewer than 2 pages of "
                        f"{page_bytes / 2**10:.0f} KB", "raise the page budget or lower the page size")
    return min(n_pages, pages)


class FileStore:
    """Pages in a page file on disk, updated in place; at most `budget_bytes` of it in RAM."""

    def __init__(self, n_pages: int, page_elems: int, budget_bytes: int, page_dir: str | Path | None = None,
                 allow_tmpfs: bool = False):
        self.n_pages, self.page_elems, self.device = n_pages, page_elems, torch.device("cpu")
        self.page_bytes = 2 * page_elems * 4
        if (page_elems * 4) % mmap.PAGESIZE:  # RAM comes in OS pages: a moment's half-page must be whole ones
            raise UserError(f"page size {self.page_bytes} B is not a multiple of {2 * mmap.PAGESIZE // 1024} KB",
                            f"use a page size of k x {2 * mmap.PAGESIZE // 1024} KB for CPU parameters")
        self.window = _check(n_pages, budget_bytes, self.page_bytes)  # pages in RAM between two drops
        self.budget_bytes = budget_bytes
        folder = Path(page_dir) if page_dir else default_page_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create page_dir {folder}: {exc.strerror}", "pass a writable folder") from None
        kind = filesystem_type(folder)
        if kind and not allow_tmpfs:
            raise UserError(f"page_dir {folder} is on {kind}, which is RAM: the paged state would never leave memory",
                            "point page_dir at a folder on a disk, or set allow_tmpfs=true to accept that")
        self.path_kind = kind or "disk"
        self.nbytes = max(2 * n_pages * page_elems * 4, mmap.PAGESIZE)
        fd, path = tempfile.mkstemp(prefix="lab-paged-optimizer-", suffix=".pages", dir=folder)
        os.unlink(path)  # the open descriptor and the mapping keep it alive; nothing is left behind
        try:
            os.posix_fallocate(fd, 0, self.nbytes)  # reserve the blocks now: a full disk is an error here, not a SIGBUS later
        except OSError as exc:
            os.close(fd)
            raise UserError(f"cannot reserve {self.nbytes / 2**20:.1f} MB for optimizer pages in {folder}: "
                            f"{exc.strerror}", "free disk space or point page_dir elsewhere") from None
        self.fd = fd
        self._mm = mmap.mmap(fd, self.nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._mm.madvise(mmap.MADV_RANDOM)  # no readahead: only the pages we touch come in
        count = 2 * n_pages * page_elems
        self.backing = torch.frombuffer(self._mm, dtype=torch.float32, count=count).view(2, n_pages, page_elems)
        self.touched: set[int] = set()  # pages in RAM since the last drop
        self.dirty: set[int] = set()
        self.stats = {"page_ins": 0, "page_outs": 0, "hits": 0, "drops": 0, "max_resident_bytes": 0}

    @property
    def backing_bytes(self) -> int:
        return self.nbytes

    @property
    def slot_bytes(self) -> int:
        return 0  # no copies: pages are updated where they live

    def resident_bytes(self) -> int:
        """Measured now: bytes of the page file in RAM (mincore over the whole mapping)."""
        return span_resident_bytes(self.backing.data_ptr(), self.nbytes)

    def _ranges(self, page: int):
        span = self.page_elems * 4
        return [((half * self.n_pages + page) * span, span) for half in (0, 1)]

    def _bring(self, page: int) -> None:
        if len(self.touched) >= self.window:
            self.drop()
        self.touched.add(page)
        self.stats["page_ins"] += 1

    def prefetch(self, page: int) -> None:
        """Ask the kernel to start reading `page` (asynchronous readahead), if the window has room."""
        if page in self.touched or len(self.touched) >= self.window:
            return
        self._bring(page)
        for offset, length in self._ranges(page):
            skew = offset % mmap.PAGESIZE  # madvise wants a page-aligned start
            self._mm.madvise(mmap.MADV_WILLNEED, offset - skew, length + skew)

    def acquire(self, page: int) -> torch.Tensor:
        """The (2, page_elems) view of `page` in the file; it stays in RAM until the next drop."""
        if page in self.touched:
            self.stats["hits"] += 1
        else:
            self._bring(page)
        return self.backing[:, page]

    def release(self, page: int, dirty: bool = True) -> None:
        if dirty:
            self.dirty.add(page)

    def drop(self) -> None:
        """Write dirty pages to disk and evict the whole file from RAM, after measuring what was in RAM."""
        self.stats["max_resident_bytes"] = max(self.stats["max_resident_bytes"], self.resident_bytes())
        flags = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER
        if _libc.sync_file_range(self.fd, ctypes.c_int64(0), ctypes.c_int64(0), ctypes.c_uint(flags)) != 0:
            self._mm.flush()  # msync: slower (it commits the journal) but always there
        self._mm.madvise(mmap.MADV_DONTNEED)
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        self.stats["page_outs"] += len(self.dirty)
        self.stats["drops"] += 1
        self.touched.clear()
        self.dirty.clear()

    def end_step(self) -> None:
        """Between steps the whole state is on disk."""
        self.drop()

    def flush(self) -> None:
        """Nothing to write back before reading `moment` views: pages are updated in place."""

    def invalidate(self) -> None:
        """After the state was overwritten through `moment` views: push it out of RAM."""
        self.drop()

    def moment(self, which: int, offset: int, numel: int) -> torch.Tensor:
        """A view of `numel` values of moment `which` (0: exp_avg, 1: exp_avg_sq) in the file."""
        return self.backing[which].view(-1)[offset:offset + numel]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class SlotStore:
    """Pages in host memory (pinned for CUDA), at most `budget_bytes` of them resident in device slots."""

    def __init__(self, n_pages: int, page_elems: int, device: torch.device, budget_bytes: int):
        self.n_pages, self.page_elems, self.device = n_pages, page_elems, device
        self.page_bytes = 2 * page_elems * 4
        n_slots = _check(n_pages, budget_bytes, self.page_bytes)
        self.budget_bytes = budget_bytes
        self.path_kind = "pinned host memory" if device.type == "cuda" else "host memory"
        self.backing = torch.zeros((2, n_pages, page_elems), dtype=torch.float32, pin_memory=device.type == "cuda")
        self.slots = torch.zeros(n_slots, 2, page_elems, dtype=torch.float32, device=device)
        self.free = list(range(n_slots))
        self.resident: OrderedDict[int, int] = OrderedDict()  # page -> slot, least recently used first
        self.pinned: set[int] = set()  # pages in use or being prefetched: never evicted
        self.pending: dict[int, torch.cuda.Event] = {}  # page -> event of its prefetch
        self.dirty: set[int] = set()
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.stats = {"page_ins": 0, "page_outs": 0, "hits": 0, "max_resident_bytes": 0}

    @property
    def backing_bytes(self) -> int:
        return self.backing.numel() * 4

    @property
    def slot_bytes(self) -> int:
        """Device bytes allocated for resident pages: fixed at start, never above the budget."""
        return self.slots.numel() * 4

    def resident_bytes(self) -> int:
        return len(self.resident) * self.page_bytes

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

    def _load(self, page: int, slot: int) -> None:
        for half in (0, 1):  # pinned -> device copies are asynchronous on CUDA
            self.slots[slot, half].copy_(self.backing[half, page], non_blocking=self.stream is not None)

    def prefetch(self, page: int) -> None:
        """Start bringing `page` in on the side stream, if there is a slot that can be freed for it."""
        if self.stream is None or page in self.resident:
            return
        if not self.free and all(p in self.pinned for p in self.resident):
            return
        slot = self._take_slot()
        self.resident[page] = slot
        self.pinned.add(page)
        self.stats["page_ins"] += 1
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the slot's last readers
        with torch.cuda.stream(self.stream):
            self._load(page, slot)
            event = torch.cuda.Event()
            event.record(self.stream)
        self.pending[page] = event
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
        event = self.pending.pop(page, None)
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
        self.pinned.add(page)
        self.resident.move_to_end(page)
        self._count()
        return self.slots[self.resident[page]]

    def release(self, page: int, dirty: bool = True) -> None:
        self.pinned.discard(page)
        if dirty:
            self.dirty.add(page)

    def _count(self) -> None:
        self.stats["max_resident_bytes"] = max(self.stats["max_resident_bytes"], self.resident_bytes())

    def end_step(self) -> None:
        """Resident pages stay in their slots across steps (the next step's hits)."""

    def flush(self) -> None:
        """Write every dirty resident page back (before reading the backing store directly)."""
        for page, slot in self.resident.items():
            self._write_back(page, slot)

    def invalidate(self) -> None:
        """Forget resident pages without writing them (after the backing store was overwritten)."""
        self.pending.clear()
        self.free += list(self.resident.values())
        self.resident.clear()
        self.pinned.clear()
        self.dirty.clear()

    def moment(self, which: int, offset: int, numel: int) -> torch.Tensor:
        """A view of `numel` values of moment `which` (0: exp_avg, 1: exp_avg_sq) in the backing store."""
        return self.backing[which].view(-1)[offset:offset + numel]

    def close(self) -> None:
        pass
