"""A tiny `lab distill cot` run shared by the distill recipe tests (GRPO/DAPO start from its model)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

COT_SMOKE = ("train.max_steps=40", "train.batch_size=16", "train.micro_batch_size=16", "train.save_every=0",
             "train_size=256", "test_size=8", "max_new_tokens=24", "eval_batch_size=8", "shots=1", "train.tensorboard=false")


@pytest.fixture(scope="session")
def cot_runs(lab_home, tmp_path_factory):
    """A runs folder holding one tiny `lab distill cot` run (slow tests only: it takes seconds)."""
    folder = tmp_path_factory.mktemp("distill_runs")
    env = {**os.environ, "LAB_HOME": str(lab_home), "LAB_RUNS": str(folder)}
    proc = subprocess.run([sys.executable, "-m", "labcli", "distill", "cot", "--task", "arith", *COT_SMOKE],
                          capture_output=True, text=True, env=env, cwd=folder, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


@pytest.fixture(scope="session")
def cot_smoke() -> tuple[str, ...]:
    """The tiny settings of that run, for tests that train another student the same way."""
    return COT_SMOKE


@pytest.fixture(scope="session")
def cot_model(cot_runs):
    """The model folder of the shared tiny `lab distill cot` run."""
    (run,) = cot_runs.glob("distill-cot-*")
    return run / "model"
