"""`lab bench rl`: every implementation runs; finished cells survive a kill and --resume auto runs only the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from labcli.cli import app
from labcli.errors import UserError

ENV = "MiniGrid-Empty-5x5-v0"


@pytest.mark.slow
def test_bench_rl_smoke(run_lab, tmp_path):
    run = tmp_path / "bench"
    proc = run_lab("bench", "rl", "--env", ENV, "--frames", "2048", "seeds=[0]", "implementations=[lab,sb3_matched,sb3_zoo]",
                   "--output", str(run))
    summary = json.loads((run / "summary.json").read_text())
    assert [r["implementation"] for r in summary["runs"]] == ["lab", "sb3_matched", "sb3_zoo"]
    assert all(r["episodes"] > 0 and r["final_return"] is not None for r in summary["runs"])
    assert summary["hardware"].startswith("CPU") and len(summary["load_average_1min"]) == 2 and (run / "bench_rl.png").is_file()
    for impl in ("lab", "sb3_matched", "sb3_zoo"):  # each cell's episodes, in lab's metrics format
        episodes = [json.loads(line) for line in (run / f"{impl}-seed0" / "metrics.jsonl").read_text().splitlines()]
        assert len([e for e in episodes if "episode_return" in e]) == summary["runs"][["lab", "sb3_matched", "sb3_zoo"].index(impl)]["episodes"]
    report = (run / "report.md").read_text()
    assert "| lab |" in report and "| sb3_matched |" in report and "| sb3_zoo |" in report
    assert "on a quiet 2-core CPU" in proc.stdout.splitlines()[0] and proc.stdout.count("run folder:") == 1


@pytest.mark.slow
def test_killed_bench_keeps_finished_cells_and_resume_runs_only_the_rest(lab_home, tmp_path):
    """Killed (SIGKILL) while its second cell runs; --resume auto reuses the first cell untouched."""
    run = tmp_path / "bench"
    args = ["bench", "rl", "--env", ENV, "--frames", "2048", "seeds=[0,1]", "implementations=[lab]",
            "ppo.num_envs=4", "ppo.num_steps=64", "ppo.minibatch_size=64", "--output", str(run)]
    env = {**os.environ, "LAB_HOME": str(lab_home), "LAB_RUNS": str(tmp_path / "runs")}
    proc = subprocess.Popen([sys.executable, "-m", "labcli", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first, marker = run / "lab-seed0" / "summary.json", run / "checkpoints" / "step-00000001" / "COMPLETE"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (run / "summary.json").exists(), "the kill must land after cell 1, before the end"
    kept = first.read_text(), (run / "lab-seed0" / "metrics.jsonl").stat().st_mtime_ns

    resumed = subprocess.run([sys.executable, "-m", "labcli", *args, "--resume", "auto"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 kept" in resumed.stdout and "1 cells to run" in resumed.stdout
    assert (first.read_text(), (run / "lab-seed0" / "metrics.jsonl").stat().st_mtime_ns) == kept  # not rerun
    summary = json.loads((run / "summary.json").read_text())
    assert [(r["implementation"], r["seed"]) for r in summary["runs"]] == [("lab", 0), ("lab", 1)]
    assert summary["runs"][0] == {k: v for k, v in json.loads(kept[0]).items() if k != "settings"}


def lab_error(tmp_path, monkeypatch, *args: str) -> str:
    monkeypatch.setenv("LAB_RUNS", str(tmp_path / "runs"))
    result = CliRunner().invoke(app, ["bench", "rl", *args])
    assert isinstance(result.exception, UserError), result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    return str(result.exception)


@pytest.mark.parametrize("args,needle", [
    (("seeds=[0,0]",), "listed twice"),
    (("implementations=[lab,rllib]",), "implementations"),
    (("--frames", "100"), "frames"),
    (("--env", "MiniGrid-Nope-v0"), "unknown MiniGrid env"),
])
def test_bad_input_is_one_error(tmp_path, monkeypatch, args, needle):
    assert needle in lab_error(tmp_path, monkeypatch, *args)


def test_plan_says_up_front_how_long_the_default_takes():
    from labcli.recipes.bench import rl

    text = rl.plan(rl.Config())
    assert text.startswith("6 cells to run (lab, sb3_matched x seeds [0, 1, 2]") and "about 4 min" in text
    assert "about 15 min" in rl.plan(rl.Config(seeds=[0, 1, 2, 3, 4], implementations=["lab", "sb3_matched", "sb3_zoo"]))
