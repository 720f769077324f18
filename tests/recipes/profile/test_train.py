"""`lab profile train`: phases, top ops and traces from the engine's own steps, at a tiny size."""

import json

import pytest

TINY_LM = ["train.max_steps=3", "train.batch_size=4", "train.micro_batch_size=4", "train.eval_every=0",
           "train.save_every=0", "train.tensorboard=false", "block_size=32", "vocab_size=300"]


@pytest.mark.slow
def test_profile_train_phases_ops_traces(run_lab, tmp_path):
    out = tmp_path / "prof"
    stdout = run_lab("profile", "train", *TINY_LM, "steps=2", "generate_tokens=4", "prompt_tokens=8", "top=5",
                     "--output", str(out)).stdout
    assert "train step" in stdout and "ms/token" in stdout and f"run folder: {out}" in stdout
    s = json.loads((out / "summary.json").read_text())
    assert set(s["phase_ms_per_step"]) >= {"forward", "backward", "optimizer"}
    assert abs(s["train_step_ms"] - sum(s["phase_ms_per_step"][p] for p in ("forward", "backward", "optimizer"))) < 0.01
    assert len(s["top_train_ops"]) == 5 and not any(o["name"].startswith("lab::") for o in s["top_train_ops"])
    assert s["decode_tokens"] == 4 and s["prompt_tokens"] == 8
    ops = json.loads((out / "profile" / "ops.json").read_text())
    assert ops["steps"] == 2 and any(o["name"] == "lab::backward" for o in ops["ops"])
    for name in ("profile/trace.json", "profile/generate_trace.json", "profile.png"):
        assert (out / name).stat().st_size > 0
    assert "| forward |" in (out / "report.md").read_text()


def test_profile_needs_more_steps_than_it_profiles(lab_main):
    proc = lab_main("profile", "train", "steps=5", "train.max_steps=5")
    assert proc.returncode == 2 and "must be larger than steps=5" in proc.stderr
