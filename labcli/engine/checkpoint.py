"""Checkpoints: `RUN/checkpoints/step-NNNNNNNN/`, written to a temp folder then renamed.

Holds the trainable weights (safetensors), the optimizer and scheduler, every RNG state (one file
per rank), the step (which is also the data position: the sampler is a pure function of it) and
the resolved config. Everything but the weights is loaded with `weights_only=True`. Frozen weights
(a LoRA/QLoRA base) are not stored: they are rebuilt from the model name, as at the start.
A loop without an LR scheduler (the RL agents) passes `scheduler=None`; its own state (env
frames, replay buffer, env replay records) goes in `extra`, plain data and tensors only.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from labcli import runs
from labcli.engine.distributed import barrier, world
from labcli.errors import UserError

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full (gathered) state of the trainable parameters; empty on ranks > 0 under FSDP."""
    # DCP names drop DDP's `module.` prefix; named_parameters() keeps it.
    trainable = {n.removeprefix("module.") for n, p in model.named_parameters() if p.requires_grad}
    state = get_model_state_dict(model, options=FULL)
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
    weights = trainable_state(model)
    optim = get_optimizer_state_dict(model, optimizer, options=FULL)
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    if rank == 0:
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
    try:
        weights = load_file(str(folder / "model.safetensors"))
        optim = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")
        state = torch.load(folder / "state.pt", weights_only=True, map_location="cpu")
        rng_file = folder / f"rng-rank{rank}.pt"
        rng = torch.load(rng_file if rng_file.exists() else folder / "rng-rank0.pt", weights_only=True)
    except FileNotFoundError as exc:  # safetensors' error names no file: find the missing one
        missing = next((n for n in ("model.safetensors", "optimizer.pt", "state.pt") if not (folder / n).exists()),
                       Path(str(exc.filename)).name)
        raise UserError(f"checkpoint {folder} is incomplete: {missing} missing",
                        "resume from another checkpoint or start fresh without --resume") from None
    except Exception as exc:  # truncated or corrupted files
        raise UserError(f"checkpoint {folder} is corrupt ({type(exc).__name__}: {str(exc)[:80]})",
                        "delete it to fall back to the previous one, or start fresh") from None
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, weights, options=options)
    set_optimizer_state_dict(model, optimizer, optim, options=StateDictOptions(full_state_dict=True))
    scheduler_state = state.pop("scheduler")
    if scheduler is not None:
        scheduler.load_state_dict(scheduler_state)
    set_rng_state(rng)
    return state
