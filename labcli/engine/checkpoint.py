"""Checkpoints: `RUN/checkpoints/step-NNNNNNNN/`, written to a temp folder then renamed.

Holds the trainable weights (safetensors), the optimizer and scheduler, every RNG state (one file
per rank), the step (which is also the data position: the sampler is a pure function of it) and
the resolved config. Everything but the weights is loaded with `weights_only=True`. Frozen weights
(a LoRA/QLoRA base) are not stored: they are rebuilt from the model name, as at the start.
A loop without an LR scheduler (the RL agents) passes `scheduler=None`; its own state (env
frames, replay buffer, env replay records) goes in `extra`, plain data and tensors only.

Under FSDP with several processes the weights and optimizer state are not gathered: each rank
writes its own shards with torch.distributed.checkpoint (DCP) into `step-N/sharded/` (one
`__R_0.distcp` file per rank plus `.metadata`), so no process ever holds the whole model, and a
resume loads each rank's slice in place (DCP reshards when the process count changed). The
Hugging Face 70B FSDP write-up hit exactly this: a full state dict gathered on rank 0 does not fit.
`python -m torch.distributed.checkpoint.format_utils dcp_to_torch step-N/sharded out.pt`
turns one into a single file.

Under DeepSpeed (`train.strategy=deepspeed`) the weights and the ZeRO-partitioned optimizer state are
DeepSpeed's own checkpoint in `step-N/deepspeed/` (its save_checkpoint/load_checkpoint: one
`zero_pp_rank_R_*optim_states.pt` per rank); the schedule, RNG and counters stay lab's.
`python step-N/zero_to_fp32.py step-N step-N/fp32 --tag deepspeed` (DeepSpeed's script) makes one file.
"""

from __future__ import annotations

import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from labcli import runs
from labcli.engine import zero
from labcli.engine.distributed import barrier, world
from labcli.errors import UserError

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full (gathered) state of the trainable parameters; empty on ranks > 0 under FSDP."""
    # DCP names drop DDP's `module.` prefix; named_parameters() keeps it.
    trainable = {n.removeprefix("module.") for n, p in model.named_parameters() if p.requires_grad}
    if any(type(p).__name__ == "DTensor" for p in model.parameters()):
        state = get_model_state_dict(model, options=FULL)
    else:  # nothing to gather; and DCP's name walk fails on bitsandbytes int8 layers (their SCB state key)
        state = {n: p for n, p in model.named_parameters() if p.requires_grad}
    keep, seen = {}, set()
    for name, tensor in state.items():
        clean = name.removeprefix("module.")
        if clean not in trainable:
            continue
        if tensor.data_ptr() in seen:  # tied weights: store once
            continue
        seen.add(tensor.data_ptr())
        keep[clean] = tensor.detach().contiguous()
    return keep


def is_sharded(model: torch.nn.Module) -> bool:
    """True when the parameters are DTensor shards over several processes (FSDP2)."""
    _, size = world()
    return size > 1 and any(type(p).__name__ == "DTensor" for p in model.parameters())


def sharded_state(model: torch.nn.Module, optimizer) -> dict:
    """This rank's shards of the trainable weights and of the optimizer state, for DCP."""
    trainable = {n.removeprefix("module.") for n, p in model.named_parameters() if p.requires_grad}
    weights = {n: t for n, t in get_model_state_dict(model).items() if n.removeprefix("module.") in trainable}
    return {"model": weights, "optimizer": get_optimizer_state_dict(model, optimizer)}


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(i) for i in x) if isinstance(x, (list, tuple)) else x


def save(folder: Path, step: int, model, optimizer, scheduler, extra: dict, config_yaml: str, keep_last: int) -> Path:
    """Write checkpoint `step` atomically; every rank must call this (FSDP gathers). `scheduler` may be None."""
    rank, _ = world()
    final = Path(folder) / f"step-{step:08d}"
    tmp = Path(folder) / f".tmp-step-{step:08d}"
    deepspeed = zero.is_engine(model)
    sharded = deepspeed or is_sharded(model)
    weights = optim = None
    if not sharded:
        weights = trainable_state(model)
        optim = get_optimizer_state_dict(model, optimizer, options=FULL)
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    if deepspeed:  # every rank writes its optimizer partition (ZeRO-3: also its parameter partition)
        model.save_checkpoint(str(tmp), tag="deepspeed", save_latest=False, exclude_frozen_parameters=True)
    elif sharded:  # every rank writes its own shards; the temp folder is shared (a shared filesystem across nodes)
        dcp.save(sharded_state(model, optimizer), checkpoint_id=tmp / "sharded")
    if rank == 0:
        if not sharded:
            save_file(weights, str(tmp / "model.safetensors"))
            torch.save(optim, tmp / "optimizer.pt")
        scheduler_state = scheduler.state_dict() if scheduler is not None else None
        torch.save({"step": step, "scheduler": scheduler_state, **extra}, tmp / "state.pt")
        (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
    barrier()
    if rank == 0:
        (tmp / "COMPLETE").write_text(str(step))
        runs.swap_dir(tmp, final)
        older = sorted(p for p in Path(folder).glob("step-*") if p != final)
        for old in older[: max(0, len(older) - (keep_last - 1))]:  # keep_last in all, this one included
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load(folder: Path, model, optimizer, scheduler) -> dict:
    """Restore a checkpoint into live objects (`scheduler` may be None); returns the saved extra state (step, ...)."""
    folder = Path(folder)
    rank, _ = world()
    saved_sharded = (folder / "sharded").is_dir()  # loads into any layout: DCP reshards
    saved_deepspeed = (folder / "deepspeed").is_dir()
    if saved_deepspeed != zero.is_engine(model):
        raise UserError(f"checkpoint {folder} was {'' if saved_deepspeed else 'not '}written under train.strategy=deepspeed",
                        "resume with the train.strategy it was written with, or start fresh without --resume")
    files = (("deepspeed", "state.pt") if saved_deepspeed else ("sharded/.metadata", "state.pt") if saved_sharded
             else ("model.safetensors", "optimizer.pt", "state.pt"))
    try:
        if saved_deepspeed:
            frozen = any(not p.requires_grad for p in model.parameters())
            loaded, _ = model.load_checkpoint(str(folder), tag="deepspeed", load_module_strict=not frozen,
                                              load_lr_scheduler_states=False)
            if loaded is None:
                raise FileNotFoundError(f"no DeepSpeed checkpoint in {folder / 'deepspeed'}")
        elif saved_sharded:
            shards = sharded_state(model, optimizer)
            grouped = torch.distributed.is_available() and torch.distributed.is_initialized()
            with warnings.catch_warnings():  # one process without a group is meant: DCP warns that it assumes so
                warnings.simplefilter("ignore", UserWarning)
                dcp.load(shards, checkpoint_id=folder / "sharded", no_dist=not grouped)  # fills each rank's slices in place
        else:
            weights = load_file(str(folder / "model.safetensors"))
            optim = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")
        state = torch.load(folder / "state.pt", weights_only=True, map_location="cpu")
        rng_file = folder / f"rng-rank{rank}.pt"
        rng = torch.load(rng_file if rng_file.exists() else folder / "rng-rank0.pt", weights_only=True)
    except (Exception, CheckpointException) as exc:  # DCP's exception is a BaseException
        missing = next((n for n in files if not (folder / n).exists()), None)
        if missing:  # safetensors' and DCP's errors name no file: find the missing one
            raise UserError(f"checkpoint {folder} is incomplete: {missing} missing",
                            "resume from another checkpoint or start fresh without --resume") from None
        raise UserError(f"checkpoint {folder} is corrupt ({type(exc).__name__}: {str(exc)[:80]})",
                        "delete it to fall back to the previous one, or start fresh") from None
    if saved_sharded:
        set_model_state_dict(model, shards["model"], options=StateDictOptions(strict=False))
        set_optimizer_state_dict(model, optimizer, shards["optimizer"])
    elif not saved_deepspeed:  # (DeepSpeed restored the weights and the optimizer state above)
        set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
        set_optimizer_state_dict(model, optimizer, optim, options=StateDictOptions(full_state_dict=True))
    scheduler_state = state.pop("scheduler")
    if scheduler is not None:
        scheduler.load_state_dict(scheduler_state)
    set_rng_state(rng)
    return state
