"""Every `lab simulate` example command as a user types it (issue 24's walk, simulate part): the first
line of each recipe's YAML, run from a scratch folder with the default relative run folder (./runs),
with smoke-sized overrides. Each must exit 0, end with its headline line and `run folder: runs/...`."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from labcli import registry

pytestmark = pytest.mark.slow
SMOKE = {"franka": ["steps=200"], "ur5": ["steps=200"],
         "minigrid": ["--frames", "512", "ppo.num_envs=4", "ppo.num_steps=64", "ppo.minibatch_size=64", "eval_episodes=2"]}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_example_command_runs_as_written(name, lab_home, tmp_path):
    (recipe,) = [r for r in registry.all_recipes() if r.verb == "simulate" and r.name == name]
    args = shlex.split(recipe.command)[1:]
    if "--frames" in args:  # the smoke size replaces the example's
        i = args.index("--frames")
        del args[i:i + 2]
    env = {**os.environ, "LAB_HOME": str(lab_home)}
    env.pop("LAB_RUNS", None)
    proc = subprocess.run([sys.executable, "-m", "labcli", *args, *SMOKE[name]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    folder = next(line.split(": ", 1)[1] for line in lines if line.startswith("run folder: "))
    assert folder.startswith("runs/simulate-") and (tmp_path / folder / "summary.json").is_file()
    assert lines.index(f"run folder: {folder}") > 0  # the headline numbers come first
