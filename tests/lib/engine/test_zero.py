"""DeepSpeed ZeRO as an engine strategy: 2 real gloo processes on the CPU train the same model on the
same global batches under DDP, ZeRO-2, ZeRO-3 and ZeRO-3 with CPU offload (slow); a ZeRO-3 run
resumes from DeepSpeed's checkpoint exactly; one process (a group of one) matches strategy=single
(slow). The refusals are one line, in-process (fast)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from labcli.config import RecipeConfig
from labcli.engine import zero
from labcli.engine.trainer import TrainConfig, train
from labcli.errors import UserError
from labcli.runs import Run
from labcli.serving.process import free_port_block


class Net(torch.nn.Module):
    """Three layers, so ZeRO-3 partitions several parameters of different sizes."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16),
                                        torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def forward(self, x, y):
        return type("Out", (), {"loss": torch.nn.functional.mse_loss(self.body(x), y)})


def data(n: int = 64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = torch.sin(x.sum(1, keepdim=True))
    return [{"x": x[i], "y": y[i]} for i in range(n)]


def collate(rows):
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


# Global batch 16 = 2 processes x micro-batch 4 x 2 accumulation passes; warm-up then cosine; the
# clip (0.5) is active in the first steps; AdamW with weight decay.
KEYS = dict(max_steps=6, batch_size=16, micro_batch_size=4, lr=0.02, weight_decay=0.01, warmup_steps=2,
            max_grad_norm=0.5, eval_every=0, tensorboard=False, save_every=3)
RUNS = {"ddp": dict(strategy="ddp"), "zero2": dict(strategy="deepspeed", zero_stage=2),
        "zero3": dict(strategy="deepspeed", zero_stage=3),
        "zero3-offload": dict(strategy="deepspeed", zero_stage=3, deepspeed_offload=True)}


def weights(model) -> dict:
    with zero.gathered(model):
        return {k: v.detach().clone().float() for k, v in model.state_dict().items()}


def worker(rank: int, port: int, folder: str, out: dict) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        rows, results = data(), {}
        for name, keys in RUNS.items():
            run = Run(Path(folder, name), "test", "sft", RecipeConfig())
            done = train(Net(0), rows, collate, TrainConfig(**KEYS, **keys), run, eval_set=rows[:16],
                         device=torch.device("cpu"), progress=False)
            results[name] = {"eval_loss": done.eval_loss, "weights": weights(done.model)}
        # Resume ZeRO-3 from its step-3 checkpoint into a model with other initial weights.
        saved = next(p for p in sorted(os.listdir(os.path.join(folder, "zero3", "checkpoints"))) if p.endswith("3"))
        run = Run(Path(folder, "zero3-resumed"), "test", "sft", RecipeConfig(),
                  resume_from=Path(folder, "zero3", "checkpoints", saved))
        done = train(Net(1), rows, collate, TrainConfig(**KEYS, **RUNS["zero3"]), run, device=torch.device("cpu"),
                     eval_set=rows[:16], progress=False)
        results["zero3-resumed"] = {"eval_loss": done.eval_loss, "weights": weights(done.model)}
        if rank == 0:
            out.update(results)
    finally:
        dist.destroy_process_group()


def losses(folder) -> list[float]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.slow
def test_zero2_zero3_and_offload_match_ddp_and_zero3_resumes_exactly(tmp_path, monkeypatch):
    """fp32 on the CPU: the same sums in another order (ZeRO reduce-scatters flat buffers, DDP
    all-reduces buckets) move the last bits, so per-step losses agree to 1e-5 relative, not bit for bit."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is installed by `make install` (see README)")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(worker, args=(free_port_block(1), str(tmp_path), out), nprocs=2, join=True)
        out = dict(out)
    ddp = losses(tmp_path / "ddp")
    assert len(ddp) == 6 and ddp[-1] < ddp[0]
    for name in ("zero2", "zero3", "zero3-offload"):
        assert losses(tmp_path / name) == pytest.approx(ddp, rel=1e-5), name
        assert out[name]["eval_loss"] == pytest.approx(out["ddp"]["eval_loss"], rel=1e-5), name
        for key, tensor in out["ddp"]["weights"].items():
            torch.testing.assert_close(out[name]["weights"][key], tensor, rtol=1e-5, atol=1e-6)
    step3 = tmp_path / "zero3" / "checkpoints" / "step-00000003"
    assert (step3 / "COMPLETE").exists() and (step3 / "deepspeed").is_dir() and not (step3 / "model.safetensors").exists()
    assert losses(tmp_path / "zero3-resumed") == losses(tmp_path / "zero3")[3:]
    for key, tensor in out["zero3"]["weights"].items():
        assert torch.equal(out["zero3-resumed"]["weights"][key], tensor), key


@pytest.mark.parametrize("keys, message", [
    (dict(compile=True), "train.compile=true with train.strategy=deepspeed"),
    (dict(optimizer="bnb-paged-adamw"), "paged/8-bit optimizers"),
    (dict(fsdp_cpu_offload=True), "FSDP keys"),
    (dict(strategy="ddp", deepspeed_offload=True), "deepspeed_offload=true with train.strategy=ddp"),
])
def test_unsupported_combinations_are_one_line(keys, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**{"strategy": "deepspeed", **keys})


def test_missing_deepspeed_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import deepspeed raises ImportError
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    with pytest.raises(UserError, match="needs DeepSpeed, which is not installed") as info:
        zero.import_deepspeed(torch.device("cpu"))
    assert "pip install --no-build-isolation deepspeed==" in info.value.hint


def test_missing_deepspeed_is_caught_with_the_config(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(UserError, match="needs DeepSpeed, which is not installed") as info:
        TrainConfig(strategy="deepspeed", zero_stage=3)
    assert "--no-build-isolation" in info.value.hint
    TrainConfig(strategy="ddp")  # the other strategies do not need it


@pytest.mark.slow
def test_one_process_gets_a_group_of_one_and_matches_single(tmp_path, monkeypatch):
    """ZeRO-3 with offload in one process (DeepSpeed on one GPU): lab forms the group, losses are single's."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is installed by `make install` (see README)")
    import deepspeed.comm.comm as ds_comm

    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "0")  # what zero.initialize sets; restored after the test
    keys = {**KEYS, "batch_size": 8, "save_every": 0}
    try:
        for name, extra in {"single": dict(strategy="single"), "zero3": RUNS["zero3-offload"]}.items():
            run = Run(tmp_path / name, "test", "sft", RecipeConfig())
            train(Net(0), data(), collate, TrainConfig(**keys, **extra), run, device=torch.device("cpu"), progress=False)
        assert torch.distributed.get_world_size() == 1
    finally:  # the group of one lives until the process ends under `lab`; here the test worker goes on
        torch.distributed.destroy_process_group()
        monkeypatch.setattr(ds_comm, "cdb", None)
    assert losses(tmp_path / "zero3") == pytest.approx(losses(tmp_path / "single"), rel=1e-5)
