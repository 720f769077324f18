"""`lab profile train` and `lab reproduce run` through the real CLI, at tiny sizes."""

import json

TINY_LM = ["train.max_steps=3", "train.batch_size=4", "train.micro_batch_size=4", "train.eval_every=0",
           "train.save_every=0", "train.tensorboard=false", "block_size=32", "vocab_size=300"]


def one_line_error(proc, fragment: str) -> None:
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_profile_train_phases_ops_traces(run_lab, tmp_path):
    out = tmp_path / "prof"
    stdout = run_lab("profile", "train", *TINY_LM, "steps=2", "generate_tokens=4", "prompt_tokens=8", "top=5",
                     "--output", str(out)).stdout
    assert "train step" in stdout and "ms/token" in stdout
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
    one_line_error(run_lab("profile", "train", "steps=5", "train.max_steps=5", check=False), "must be larger than steps=5")


def test_reproduce_a_run_and_catch_a_difference(run_lab, tmp_path):
    original = tmp_path / "original"
    run_lab("finetune", "tiny-lm", *TINY_LM, "--output", str(original))
    out = tmp_path / "repro"
    stdout = run_lab("reproduce", "run", "--run", str(original), "--output", str(out)).stdout
    assert "0 different" in stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["reproduced"] and s["verb"] == "finetune" and s["counts"]["different"] == 0
    rows = {r["key"]: r for r in s["rows"]}
    assert rows["final_loss"]["verdict"] == "identical" and rows["metrics.loss"]["verdict"] == "identical"
    assert rows["wall_s"]["verdict"] == "measured" and rows["peak_memory_mb"]["verdict"] == "measured"

    summary = json.loads((original / "summary.json").read_text())  # a result that no longer matches its config
    summary["final_loss"] += 0.5
    (original / "summary.json").write_text(json.dumps(summary))
    one_line_error(run_lab("reproduce", "run", "--run", str(original), "--output", str(tmp_path / "r2"), check=False),
                   "did not reproduce: 1 values differ (final_loss)")
    one_line_error(run_lab("reproduce", "run", "--run", str(tmp_path / "nope"), check=False), "no run folder")
