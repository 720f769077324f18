"""`lab reproduce run`: a rerun from the saved config matches value by value, and a changed result is caught."""

import json

import pytest
import yaml

TINY_LM = ["train.max_steps=3", "train.batch_size=4", "train.micro_batch_size=4", "train.eval_every=0",
           "train.save_every=0", "train.tensorboard=false", "block_size=32", "vocab_size=300"]


def one_line_error(proc, fragment: str) -> None:
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_reproduce_a_run_and_catch_a_difference(run_lab, tmp_path):
    original = tmp_path / "original"
    run_lab("finetune", "tiny-lm", *TINY_LM, "--output", str(original))
    out = tmp_path / "repro"
    stdout = run_lab("reproduce", "run", "--run", str(original), "--output", str(out)).stdout
    assert "0 different" in stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["reproduced"] and s["verb"] == "finetune" and s["recipe"] == "tiny-lm" and s["counts"]["different"] == 0
    assert s["environment_changes"] == []
    rows = {r["key"]: r for r in s["rows"]}
    assert rows["final_loss"]["verdict"] == "identical" and rows["metrics.loss"]["verdict"] == "identical"
    assert rows["wall_s"]["verdict"] == "measured" and rows["peak_memory_mb"]["verdict"] == "measured"

    summary = json.loads((original / "summary.json").read_text())  # a result that no longer matches its config
    summary["final_loss"] += 0.5
    (original / "summary.json").write_text(json.dumps(summary))
    config = yaml.safe_load((original / "config.yaml").read_text())  # and made by other library versions
    config["lab"]["versions"]["torch"] = "0.0.1"
    (original / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_lab("reproduce", "run", "--run", str(original), "--output", str(tmp_path / "r2"), check=False)
    one_line_error(proc, "did not reproduce: 1 values differ (final_loss)")
    assert "differs from the original run: torch 0.0.1 ->" in proc.stdout


def test_reproduce_needs_a_run_folder(lab_main, tmp_path):
    one_line_error(lab_main("reproduce", "run", "--run", str(tmp_path / "nope")), "no run folder")
