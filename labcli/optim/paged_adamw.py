"""lab's paged AdamW: torch AdamW's update, with its fp32 state kept in pages outside the device.

All parameters' moments (exp_avg, exp_avg_sq) are laid end to end in one flat space, cut into
fixed-size pages held by a store (`labcli.optim.paged_store`): for CPU parameters a page file on
disk (in `page_dir`, default under LAB_HOME) of which at most `page_budget` bytes are in RAM,
measured with mincore; for CUDA parameters pinned host memory with at most `page_budget` bytes
of device slots. A step walks the pages in order: it acquires the current page, starts
prefetching the next `prefetch_pages` of the walk (the rest of this parameter, then the next
parameter's) and updates every parameter slice that lives in the page.

Parameters may be plain tensors (single process, DDP) or FSDP2 DTensors: each rank pages the
moments of its local shard, and `state_dict()` returns DTensors shaped like the parameters, so
`torch.distributed.checkpoint.state_dict` can gather and re-shard them like torch AdamW's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import chain

import torch
from torch.distributed.tensor import DTensor

from labcli.optim.paged_store import FileStore, SlotStore


def _local(t: torch.Tensor) -> torch.Tensor:
    """The tensor this process holds: the local shard of a DTensor, else the tensor itself."""
    return t.to_local() if isinstance(t, DTensor) else t


class PagedAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, fp32 moments) with its state paged within a byte budget."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, page_budget: int = 64 * 2**20, page_bytes: int = 256 * 2**10,
                 prefetch_pages: int = 2, page_dir: str | None = None, allow_tmpfs: bool = False,
                 store: str = "auto"):
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid AdamW hyper-parameters lr={lr} betas={betas} eps={eps} wd={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.prefetch_pages = prefetch_pages
        self._params = [p for g in self.param_groups for p in g["params"]]
        with torch.no_grad():
            locals_ = [_local(p) for p in self._params]
        devices = {t.device for t in locals_}
        if len(devices) > 1:
            raise ValueError(f"PagedAdamW needs every parameter on one device, got {sorted(map(str, devices))}")
        device = devices.pop() if devices else torch.device("cpu")
        self._numel = [t.numel() for t in locals_]
        self._offset = [0, *torch.tensor(self._numel, dtype=torch.long).cumsum(0).tolist()][:-1] if locals_ else []
        page_elems = page_bytes // 8  # two fp32 moments per element
        total = sum(self._numel)
        n_pages = math.ceil(total / page_elems)
        if store == "file" or (store == "auto" and device.type == "cpu"):
            if device.type != "cpu":
                raise ValueError("the page file store holds CPU parameters' state")
            self.store = FileStore(n_pages, page_elems, page_budget, page_dir, allow_tmpfs)
        else:  # "slots": device slots over host memory (CUDA; on the CPU only for tests)
            self.store = SlotStore(n_pages, page_elems, device, page_budget)
        self._segments = self._layout(n_pages, page_elems)

    def add_param_group(self, param_group: dict) -> None:
        if hasattr(self, "store"):
            raise RuntimeError("PagedAdamW lays its pages out once: pass every parameter group to the constructor")
        super().add_param_group(param_group)

    def _layout(self, n_pages: int, page_elems: int) -> list[list[tuple[int, int, int, int]]]:
        """For each page: (param index, start, end in the param, start in the page) of every slice in it."""
        segments: list[list[tuple[int, int, int, int]]] = [[] for _ in range(n_pages)]
        for i, (off, n) in enumerate(zip(self._offset, self._numel)):
            pos = off
            while pos < off + n:
                page, start = divmod(pos, page_elems)
                end = min(off + n, (page + 1) * page_elems)
                segments[page].append((i, pos - off, end - off, start))
                pos = end
        return segments

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = {id(p): g for g in self.param_groups for p in g["params"]}
        active: dict[int, tuple] = {}
        for i, p in enumerate(self._params):
            if p.grad is None or self._numel[i] == 0:
                continue
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.tensor(0.0)
            state["step"] += 1
            g = groups[id(p)]
            beta1, beta2 = g["betas"]
            step = state["step"].item()
            param = _local(p)
            if not param.is_contiguous():
                raise RuntimeError("PagedAdamW needs contiguous parameters")
            grad = _local(p.grad).reshape(-1)
            active[i] = (param.view(-1), grad, g["lr"], g["weight_decay"], beta1, beta2, g["eps"],
                         g["lr"] / (1 - beta1 ** step), (1 - beta2 ** step) ** 0.5)
        walk = [k for k, segs in enumerate(self._segments) if any(s[0] in active for s in segs)]
        for n, page in enumerate(walk):
            slot = self.store.acquire(page)
            for ahead in walk[n + 1:n + 1 + self.prefetch_pages]:
                self.store.prefetch(ahead)
            for i, lo, hi, start in self._segments[page]:
                if i in active:
                    _adamw(*active[i][:2], lo, hi, slot[0, start:start + hi - lo], slot[1, start:start + hi - lo],
                           *active[i][2:])
            self.store.release(page)
        self.store.end_step()
        return loss

    # -- state dict: the torch AdamW format, so DCP's full/sharded state dicts work ---------------
    def state_dict(self) -> dict:
        self.store.flush()
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in g["params"]]
            groups.append(packed)
        state = {}
        for i, p in enumerate(self._params):
            if "step" not in self.state.get(p, {}):
                continue
            state[index[id(p)]] = {"step": self.state[p]["step"].clone(),
                                   "exp_avg": self._moment(i, 0), "exp_avg_sq": self._moment(i, 1)}
        return {"state": state, "param_groups": groups}

    def _moment(self, i: int, which: int) -> torch.Tensor:
        """Moment `which` of parameter i, shaped (and placed, for a DTensor) like the parameter.

        On the CPU a view of the store, as torch AdamW's state_dict holds its live tensors: saving a
        checkpoint then reads the pages through the page cache instead of copying the whole state."""
        p = self._params[i]
        local = self.store.moment(which, self._offset[i], self._numel[i]).view(_local(p).shape)
        if local.device != _local(p).device:
            local = local.to(_local(p).device, copy=True)
        if isinstance(p, DTensor):
            return DTensor.from_local(local, p.device_mesh, p.placements, run_check=False,
                                      shape=p.shape, stride=p.stride())
        return local

    def load_state_dict(self, state_dict: dict) -> None:
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        saved_ids = list(chain.from_iterable(g["params"] for g in saved_groups))
        if len(saved_ids) != len(self._params):
            raise ValueError(f"loaded state dict has {len(saved_ids)} parameters, this optimizer {len(self._params)}")
        for group, saved in zip(self.param_groups, saved_groups):
            group.update({k: (tuple(v) if k == "betas" else v) for k, v in saved.items() if k != "params"})
        position = {pid: i for i, pid in enumerate(saved_ids)}
        self.store.invalidate()
        self.state = defaultdict(dict)
        for pid, saved in state_dict["state"].items():
            i = position[pid]
            for which, key in ((0, "exp_avg"), (1, "exp_avg_sq")):
                value = _local(saved[key]).detach().reshape(-1)
                self.store.moment(which, self._offset[i], self._numel[i]).copy_(value)
            self.state[self._params[i]] = {"step": torch.tensor(float(saved["step"]), dtype=torch.float32)}
        self.store.end_step()  # the page file: written state goes to disk, out of RAM

    def memory_report(self) -> dict:
        """Bytes of optimizer state: logical, in the backing store, resident now and at most.

        Page file (CPU): resident_bytes and max_resident_bytes are measured (mincore), the latter
        right before every drop, when the most pages are in RAM. Slots (CUDA): pages held in slots."""
        s = self.store
        return {"state_bytes": 8 * sum(self._numel), "backing_bytes": s.backing_bytes, "page_bytes": s.page_bytes,
                "pages": s.n_pages, "budget_bytes": s.budget_bytes, "slot_bytes": s.slot_bytes,
                "resident_bytes": s.resident_bytes(), "measured": isinstance(s, FileStore),
                "backing": "page file" if isinstance(s, FileStore) else s.path_kind, **s.stats}

    def __del__(self):
        store = getattr(self, "store", None)
        if store is not None:
            store.close()


def _adamw(param, grad, lo, hi, exp_avg, exp_avg_sq, lr, weight_decay, beta1, beta2, eps, step_size, bc2_sqrt):
    """torch.optim.AdamW's single-tensor update on param[lo:hi], in fp32."""
    p = param[lo:hi]
    work = p if p.dtype == torch.float32 else p.float()
    g = grad[lo:hi].float()
    if weight_decay != 0:
        work.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
    work.addcdiv_(exp_avg, denom, value=-step_size)
    if work is not p:
        p.copy_(work)
