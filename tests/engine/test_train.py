"""The engine end to end through the real `lab` entry point: smoke, DDP/FSDP2 parity, exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

TINY = ["finetune", "tiny-lm", "train.eval_every=0", "train.tensorboard=false", "vocab_size=500"]


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


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


def test_corrupt_checkpoint_is_one_line(run_lab, tmp_path):
    out = tmp_path / "run"
    run_lab(*TINY, "train.max_steps=2", "--output", str(out))
    (out / "checkpoints" / "step-00000002" / "model.safetensors").write_bytes(b"not a safetensors file")
    proc = run_lab(*TINY, "train.max_steps=4", "--output", str(out), "--resume", "auto", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: checkpoint ") and "is corrupt" in proc.stderr


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
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
