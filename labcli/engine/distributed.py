"""Process-group set-up and model wrapping: single process, DDP, or FSDP2 (`fully_shard`)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from labcli.errors import UserError


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init(device: torch.device) -> None:
    """Join the process group when launched by torchrun: gloo on the CPU, NCCL on CUDA."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is visible", "use --device cpu or auto")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def resolve_strategy(strategy: str) -> str:
    _, size = world()
    if strategy == "auto":
        return "ddp" if size > 1 else "single"
    if strategy in ("ddp", "fsdp") and size == 1:
        return "single"  # one process: nothing to replicate or shard
    if strategy == "single" and size > 1:
        raise UserError(f"strategy=single with {size} processes", "use train.strategy=ddp, fsdp or deepspeed, or --nproc 1")
    return strategy


def block_classes(model: torch.nn.Module) -> tuple[type, ...]:
    """The repeated transformer blocks, from Hugging Face's `_no_split_modules` when available."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    found = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not found:  # fall back to the children of the largest ModuleList
        lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
        if lists:
            found = {type(c) for c in max(lists, key=len)}
    return tuple(found)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is true on at least one process."""
    return bool(all_reduce_sum([float(flag)], device)[0])


def on_meta(model: torch.nn.Module) -> bool:
    """Built without weights (the meta device): the non-zero ranks under FSDP's rank-0 loading."""
    return any(p.is_meta for p in model.parameters())


def wrap(model: torch.nn.Module, strategy: str, device: torch.device, cpu_offload: bool = False,
         from_rank0: bool = False) -> torch.nn.Module:
    """Return the model to train: as is, in DDP, or sharded per block then at the root (FSDP2).

    `cpu_offload` (FSDP2's CPUOffloadPolicy): shards, gradients and the optimizer step live in CPU
    RAM, each block is copied to the device to be all-gathered (pinned memory only with CUDA).
    `from_rank0` (FSDP): only rank 0 holds the weights (in CPU RAM); the other ranks built the model
    on the meta device. After sharding, each rank allocates its shards only and receives them from
    rank 0, so a node holds one copy of the model instead of one per process."""
    if from_rank0 and strategy != "fsdp":
        raise UserError(f"a model built without weights (rank-0 loading) with strategy={strategy}",
                        "loading on rank 0 only works with train.strategy=fsdp and several processes")
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

        kwargs = {"offload_policy": CPUOffloadPolicy(pin_memory=device.type == "cuda")} if cpu_offload else {}
        full = model.state_dict() if from_rank0 and not on_meta(model) else {}  # rank 0's whole weights, kept aside
        blocks = block_classes(model)
        for module in model.modules():
            if blocks and isinstance(module, blocks):
                fully_shard(module, **kwargs)
        fully_shard(model, **kwargs)
        if from_rank0:
            broadcast_from_rank0(model, full, torch.device("cpu") if cpu_offload else device)
    return model


def broadcast_from_rank0(model: torch.nn.Module, full: dict, device: torch.device) -> None:
    """Fill every rank's FSDP2 shards (and the unsharded buffers) from rank 0's whole state dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if on_meta(model):
        model.to_empty(device=device)  # allocates this rank's shards only
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for buffer in model.buffers():  # non-persistent buffers (rotary frequencies) are in no state dict
        dist.broadcast(buffer.data, src=0)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
