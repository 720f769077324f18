"""DeepSpeed ZeRO as an engine strategy (`train.strategy=deepspeed`, `train.zero_stage=2|3`).

DeepSpeed's engine owns backward, the optimizer step, clipping, gradient accumulation and the
checkpoint of the sharded state, so the loop hands those over (`Loop.backward` / `Loop.update`,
`checkpoint.save/load`); lab keeps the rest: the optimizer by name (DeepSpeed wraps it:
`zero_allow_untested_optimizer`), its LR schedule (stepped by `fit`, not by DeepSpeed), the data
order, metrics, RNG and the checkpoint folder. ZeRO-2 shards gradients and optimizer state across
processes; ZeRO-3 also the parameters (hooks gather them around each module's forward/backward).
`train.deepspeed_offload=true` keeps the optimizer state (and under ZeRO-3 the parameters) in CPU
RAM, with lab's optimizer stepping there (`zero_force_ds_cpu_optimizer: false`; DeepSpeedCPUAdam
would be faster on a GPU machine but needs a JIT build).
`precision=bf16` is DeepSpeed's bf16 mode: bf16 weights and gradients, fp32 master weights and
moments in the optimizer (what `lab profile memory --strategy deepspeed-zero2|3` plans for).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os

import torch

from labcli.errors import UserError

INSTALL = "pip install --no-build-isolation deepspeed==0.19.8 (after torch; `make install` does it)"


def check_installed() -> None:
    """A one-line error when DeepSpeed is missing (without importing it: that takes seconds)."""
    if importlib.util.find_spec("deepspeed") is None:
        raise UserError("train.strategy=deepspeed needs DeepSpeed, which is not installed", INSTALL)


def import_deepspeed(device: torch.device):
    """deepspeed, set up for `device`, or a one-line error that says how to install it."""
    if device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # a GPU machine asked to train on its CPU
    try:
        import deepspeed
        import deepspeed.ops
    except ImportError:
        raise UserError("train.strategy=deepspeed needs DeepSpeed, which is not installed", INSTALL) from None
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)  # its config dump and per-step lines
    if device.type == "cpu":
        # On the CPU accelerator DeepSpeed's comm backend JIT-compiles a shared-memory all-reduce at
        # start-up (minutes on a small machine). Only inference tensor parallelism calls it
        # (TorchBackend.inference_all_reduce); training reduces through the gloo process group.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return deepspeed


def ds_config(cfg, world_size: int) -> dict:
    """DeepSpeed's JSON config from a TrainConfig: batch split, clipping, ZeRO stage, offload, bf16."""
    accum = cfg.batch_size // (cfg.micro_batch_size * world_size)
    zero: dict = {"stage": cfg.zero_stage}
    if cfg.deepspeed_offload:
        zero["offload_optimizer"] = {"device": "cpu"}
        if cfg.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu"}
    return {
        "train_batch_size": cfg.batch_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": cfg.max_grad_norm,  # 0: off, as in lab
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.precision == "bf16"},
        "zero_allow_untested_optimizer": True,  # lab's optimizer by name, wrapped by ZeRO
        "zero_force_ds_cpu_optimizer": False,  # offload with lab's optimizer instead of DeepSpeedCPUAdam
        "steps_per_print": 2**31,
    }


def initialize(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg, device: torch.device):
    """The DeepSpeed engine around `model` (its `.optimizer` is ZeRO's wrapper of `optimizer`).

    Every process calls it after `distributed.init` (DeepSpeed adopts the existing process group); a
    single process gets a process group of one, which stays until the process ends (`lab` closes it)."""
    import torch.distributed as dist

    if any(type(p).__name__ in ("Params4bit", "Int8Params") for p in model.parameters()):
        raise UserError("train.strategy=deepspeed with a bitsandbytes-quantized model (QLoRA) is not supported here",
                        "use train.strategy=ddp or fsdp for QLoRA, or method=lora with deepspeed")
    if not dist.is_initialized():  # one process outside torchrun (ZeRO-Offload on one GPU): a group of one,
        os.environ.setdefault("LOCAL_RANK", "0")  # which DeepSpeed asserts; left for the launcher to close
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0,
                                world_size=1)
    deepspeed = import_deepspeed(device)
    deepspeed.init_distributed(dist_backend=dist.get_backend())
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config(cfg, dist.get_world_size()))
    return engine


def is_engine(model) -> bool:
    return type(model).__name__ == "DeepSpeedEngine"


def gathered(model: torch.nn.Module):
    """A context in which ZeRO-3's partitioned parameters are whole (for state_dict / save_pretrained)."""
    params = [p for p in model.parameters() if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
