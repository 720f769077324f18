"""SFT on the engine: gradient accumulation in-process (fast); through the real `lab` entry point
(slow): smoke, DDP/FSDP2 parity, exact resume after SIGKILL."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from labcli.config import RecipeConfig
from labcli.engine.trainer import TrainConfig, train
from labcli.runs import Run


class Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(3, 1)

    def forward(self, x, y):
        return SimpleNamespace(loss=((self.linear(x) - y) ** 2).mean())


def test_micro_batches_accumulate_to_the_global_batch(tmp_path):
    """batch 8 as one micro-batch or as four of 2: the same losses, eval loss and weights."""
    g = torch.Generator().manual_seed(0)
    data = [{"x": torch.randn(3, generator=g), "y": torch.randn(1, generator=g)} for _ in range(40)]
    collate = lambda rows: {k: torch.stack([r[k] for r in rows]) for k in rows[0]}  # noqa: E731
    results = []
    for micro in (8, 2):
        cfg = TrainConfig(max_steps=5, batch_size=8, micro_batch_size=micro, lr=0.1, optimizer="sgd", eval_every=5,
                          tensorboard=False)
        run = Run(tmp_path / f"micro{micro}", "test", "sft", RecipeConfig())
        results.append(train(Regression(), data, collate, cfg, run, eval_set=data[:8], device=torch.device("cpu"),
                             progress=False))
    one, four = results
    assert four.final_loss == pytest.approx(one.final_loss, rel=1e-6) and four.eval_loss == pytest.approx(one.eval_loss)
    torch.testing.assert_close(four.model.linear.weight, one.model.linear.weight)
    assert one.steps == four.steps == 5


TINY = ["finetune", "tiny-lm", "train.eval_every=0", "train.tensorboard=false", "vocab_size=500"]


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_ten_steps_write_config_metrics_summary_checkpoint(run_lab, tmp_path):
    out = tmp_path / "run"
    run_lab(*TINY, "train.max_steps=10", "train.eval_every=5", "train.save_every=3", "train.tensorboard=true",
            "--output", str(out))
    assert "recipe: tiny-lm" in (out / "config.yaml").read_text()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 11))
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "peak_mem_mb"} <= set(steps[0])
    assert any("eval_loss" in r for r in rows)
    s = summary(out)
    assert s["steps"] == 10 and s["task"] == "causal-lm" and s["final_loss"] < 8
    ckpt = out / "checkpoints" / "step-00000010"
    assert (ckpt / "COMPLETE").exists() and (ckpt / "model.safetensors").exists()
    assert (out / "model" / "config.json").exists() and (out / "report.md").exists() and (out / "loss.png").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000009", "step-00000010"]  # keep_last=2
    assert any((out / "tensorboard").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_on_the_same_global_batch(run_lab, tmp_path, strategy):
    """Same global batch of 8: 1 process x 8 vs 2 processes x 4. Losses agree to 1e-5 (reduction order)."""
    common = [*TINY, "train.max_steps=6", "train.batch_size=8"]
    one, two = tmp_path / "one", tmp_path / strategy
    run_lab(*common, "train.micro_batch_size=8", "--output", str(one))
    run_lab(*common, "train.micro_batch_size=4", f"train.strategy={strategy}", "--nproc", "2", "--output", str(two))
    a, b = summary(one), summary(two)
    assert b["final_loss"] == pytest.approx(a["final_loss"], rel=1e-5, abs=1e-5)
    assert b["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-5, abs=1e-5)
    wa, wb = load_file(str(one / "model" / "model.safetensors")), load_file(str(two / "model" / "model.safetensors"))
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4


@pytest.mark.slow
def test_resume_after_sigkill_is_exact(run_lab, tmp_path):
    """20 steps straight == 10 steps, SIGKILL, --resume auto for 10 more (dropout on: RNG restored too)."""
    common = [*TINY, "train.max_steps=20", "train.save_every=5", "dropout=0.1"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_lab(*common, "--output", str(straight))
    proc = run_lab(*common, "--output", str(killed), env={"LAB_FAULT_KILL_AT_STEP": "11"}, check=False)
    assert proc.returncode in (-9, 137)
    assert not (killed / "summary.json").exists()
    run_lab(*common, "--output", str(killed), "--resume", "auto")
    assert summary(killed)["final_loss"] == summary(straight)["final_loss"]
    wa, wb = load_file(str(straight / "model" / "model.safetensors")), load_file(str(killed / "model" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["step"] for r in rows if "loss" in r) == list(range(1, 21)), "each step logged once"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp"])  # FSDP2's sharded resume: tests/lib/engine/test_checkpoint.py
def test_two_process_resume_after_sigkill_is_exact(run_lab, tmp_path, strategy):
    common = [*TINY, "train.max_steps=4", "train.save_every=2", "train.batch_size=8", "train.micro_batch_size=4",
              f"train.strategy={strategy}", "--nproc", "2"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_lab(*common, "--output", str(straight))
    proc = run_lab(*common, "--output", str(killed), env={"LAB_FAULT_KILL_AT_STEP": "3"}, check=False)
    assert proc.returncode != 0 and not (killed / "summary.json").exists()
    run_lab(*common, "--output", str(killed), "--resume", "auto")
    wa, wb = load_file(str(straight / "model" / "model.safetensors")), load_file(str(killed / "model" / "model.safetensors"))
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-6
    assert summary(killed)["final_loss"] == pytest.approx(summary(straight)["final_loss"], abs=1e-6)

