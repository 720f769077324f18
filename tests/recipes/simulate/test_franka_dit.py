"""`lab simulate franka-dit|ur5-dit`: one-line errors (in-process) and a tiny real run (slow)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from labcli.cli import app
from labcli.errors import UserError

TINY = ["data.scenes=16", "data.image_size=16", "train.max_steps=6", "mlp_train.max_steps=6", "train.eval_every=3",
        "eval.tasks=3", "eval.max_time=6", "eval.full_chunk_rows=true", "eval.diversity_scenes=1", "eval.diversity_samples=2", "eval.parallel=3",
        "eval.partial=[no_camera]", "eval.guidance_scales=[1]", "policy.width=32", "policy.depth=1"]


@pytest.mark.parametrize("args,needle", [
    (("policy.execute=9",), "policy.execute 9 > policy.horizon 8"),
    (("eval.masked_joints=[8]",), "the franka has joints 1..7"),
    (("policy.width=30", "policy.heads=4"), "not a multiple"),
    (("data.load=no/such/run",), "no demos.npz there"),
])
def test_bad_input_is_a_user_error_and_leaves_no_run_folder(args, needle, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_RUNS", str(tmp_path / "runs"))
    result = CliRunner().invoke(app, ["simulate", "franka-dit", *args])
    assert isinstance(result.exception, UserError) and needle in str(result.exception), result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def row(policy, collision, left, right, success=100.0):
    return {"policy": policy, "blocked_episodes": 10, "blocked_collision_pct": collision, "left_pct": left, "right_pct": right,
            "blocked_success_pct": success}


@pytest.mark.parametrize("dit,mlp,verdicts", [
    (row("DiT", 0.0, 50.0, 50.0), row("MLP-BC", 60.0, 0.0, 0.0, 0.0), ["holds", "holds"]),
    (row("DiT", 0.0, 100.0, 0.0), row("MLP-BC", 10.0, 40.0, 50.0), ["partly", "does not hold"]),  # one side only
    (row("DiT", 20.0, 30.0, 30.0), row("MLP-BC", 50.0, 0.0, 0.0), ["partly", "holds"]),  # sides within the looser bound
    (row("DiT", 20.0, 0.0, 0.0), row("MLP-BC", 0.0, 0.0, 0.0), ["does not hold", "does not hold"]),
])
def test_mode_claims_are_judged_on_the_first_dit_and_mlp_rows(dit, mlp, verdicts):
    from labcli.recipes.simulate.franka_dit import claims

    summary = {"robot": "franka", "demos": 100, "rows": [row("expert", 0.0, 50.0, 50.0), dit, mlp, row("DiT", 100.0, 0.0, 0.0)]}
    assert [c.verdict for c in claims(summary)] == verdicts


@pytest.mark.slow
def test_tiny_run_writes_the_table_and_reuses_its_demonstrations(run_lab, tmp_path):
    run = tmp_path / "run"
    proc = run_lab("simulate", "ur5-dit", *TINY, "--output", str(run))
    summary = json.loads((run / "summary.json").read_text())
    policies = [(r["policy"], r["observation"]) for r in summary["rows"]]
    assert policies[:3] == [("expert", "full observation"), ("DiT", "full observation"), ("MLP-BC", "full observation")]
    assert ("DiT", "camera dropped") in policies and summary["rows"][0]["success_pct"] == 100.0
    assert summary["demos"] >= 16 and summary["train"]["dit"]["steps"] == 6 and summary["params"]["dit"] > 0
    for name in ("demos.npz", "report.md", "trajectories.png", "losses.png", "video.gif", "dit/metrics.jsonl", "mlp/metrics.jsonl"):
        assert (run / name).is_file(), name
    assert "DiT vs MLP-BC vs expert" in proc.stdout and "mode commitment" in proc.stdout and "diversity:" in proc.stdout and proc.stdout.count("run folder:") == 1
    assert ("DiT", "full observation", "8/8") in [(r["policy"], r["observation"], r["execute"]) for r in summary["rows"]]
    # again on the saved demonstrations, barely trained, on one validation scene
    again = run_lab("simulate", "ur5-dit", *TINY, f"data.load={run}", "train.max_steps=1", "mlp_train.max_steps=1", "eval.tasks=1",
                    "eval.split=val", "eval.partial=[]", "eval.full_chunk_rows=false", "eval.diversity_scenes=0", "eval.video=false",
                    "--output", str(tmp_path / "again"))
    reused = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert reused["demos"] == summary["demos"] and reused["eval_split"] == "val" and len(reused["rows"]) == 3
    assert "demonstrations:" in again.stdout and "held-out val tasks" in again.stdout
