"""Shared fixtures: every test runs offline, with caches and runs in temporary folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("LAB_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    """In-process tests use the launcher's thread rule too (one torch thread unless LAB_THREADS says
    otherwise): two threads per pytest process crawl on a busy 2-core machine and change float sums."""
    from labcli.runs import set_threads

    set_threads()


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lab_home(tmp_path_factory) -> Path:
    """One LAB_HOME for the whole session so tokenizers and presets are cached across tests."""
    home = Path(os.environ.get("LAB_TEST_HOME", tmp_path_factory.mktemp("lab_home")))
    os.environ["LAB_HOME"] = str(home)
    return home


@pytest.fixture
def run_lab(lab_home, tmp_path):
    """Run the real `lab` entry point in a subprocess; returns CompletedProcess (text)."""

    def _run(*args: str, env: dict | None = None, check: bool = True, timeout: int = 900):
        full_env = {**os.environ, "LAB_HOME": str(lab_home), "LAB_RUNS": str(tmp_path / "runs"), **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "labcli", *args], capture_output=True, text=True,
                              env=full_env, cwd=tmp_path, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"lab {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    return _run


@pytest.fixture
def lab_main(lab_home, tmp_path, monkeypatch, capsys):
    """Run `lab ARGS` inside this process, from a scratch working directory with the default run
    folder (./runs): no interpreter start-up, so error paths cost milliseconds. Returns
    (returncode, stdout, stderr) like subprocess.run."""
    from labcli.cli import main

    def _run(*args: str):
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("LAB_RUNS", raising=False)
        monkeypatch.setattr(sys, "argv", ["lab", *args])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code or 0
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return _run
