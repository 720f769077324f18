"""`lab simulate franka|ur5`: real runs (slow) and one-line errors (in-process)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from labcli.cli import app
from labcli.errors import UserError


@pytest.mark.slow
def test_cli_franka_smoke(run_lab, tmp_path):
    proc = run_lab("simulate", "franka", "--pid", "steps=100", "--output", str(tmp_path / "run"))
    run = tmp_path / "run"
    for name in ("config.yaml", "summary.json", "report.md", "steps.csv", "tracking.png", "torques.png", "errors.png"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 100 and summary["robot"] == "franka" and summary["controller"] == "pid"
    header = (run / "steps.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["t", "q_1"] and "tau_7" in header and "error_7" in header
    assert len((run / "steps.csv").read_text().splitlines()) == 101
    assert "RMS error" in proc.stdout and proc.stdout.count("run folder:") == 1  # the launcher's line only


@pytest.mark.slow
def test_cli_ur5_estop_tune_and_video(run_lab, tmp_path):
    run = tmp_path / "run"
    run_lab("simulate", "ur5", "--pid", "--task", "joint 1 0", "--interpolation", "step", "--tune", "tuning.kp_scales=[1]", "tuning.kd_scales=[1]",
            "tuning.ki_scales=[1]", "tuning.task=hold 0.1", "--video", "render.fps=5", "render.width=64", "render.height=48",
            "--output", str(run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["estop"] and summary["estop_reason"].startswith("joint_velocity: shoulder_pan_joint")
    assert summary["tuning"][0]["best"] is True
    assert (run / "video.gif").stat().st_size > 0 and summary["video"]["frames"] > 1
    assert "Safety events" in (run / "report.md").read_text()


@pytest.mark.parametrize("args,needle", [
    (("--task", "home, then dance"), "unknown task phrase 'dance'"),
    (("gains.kp=[1,2]",), "gains.kp has 2 values"),
    (("--rate", "50"), "outside 100..20000"),
    (("--llm", "no/such/folder"), "no such model folder"),
])
def test_bad_input_is_a_user_error_and_leaves_no_run_folder(args, needle, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_RUNS", str(tmp_path / "runs"))
    result = CliRunner().invoke(app, ["simulate", "franka", *args])
    assert isinstance(result.exception, UserError) and needle in str(result.exception), result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_lm_needs_a_scene(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_RUNS", str(tmp_path / "runs"))
    result = CliRunner().invoke(app, ["simulate", "franka", "--lm", "http://127.0.0.1:9/v1"])
    assert isinstance(result.exception, UserError) and "add --scene N" in str(result.exception)


@pytest.mark.slow
def test_cli_scene_instruction_goes_around_the_obstacle(run_lab, tmp_path):
    from labcli.sims.demos import generate_task

    seed, task = next((s, t) for s, t in ((s, generate_task("franka", s)) for s in range(20)) if t.blocked)
    run = tmp_path / "run"
    proc = run_lab("simulate", "franka", "--scene", str(seed), "--task", task.instruction, "settle=0.3", "--output", str(run))
    summary = json.loads((run / "summary.json").read_text())
    assert "grounded:" in proc.stdout and summary["scene"] == task.scene.describe()
    assert not summary["estop"] and summary["plan"][0]["phrase"].endswith(("(left)", "(right)"))
