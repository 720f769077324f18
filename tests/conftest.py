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
    """No CUDA: gpu tests skip."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def keep_main_module():
    """Streamlit's AppTest swaps `sys.modules["__main__"]` for the app it ran and leaves it there; a later
    `torch.multiprocessing.spawn` in the same pytest worker would then re-run that app in each child
    (spawn re-imports `__main__.__file__`). Put the real one back after every test."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def lab_home(tmp_path_factory) -> Path:
    """One LAB_HOME for the whole session so tokenizers and presets are cached across tests."""
    home = Path(os.environ.get("LAB_TEST_HOME", tmp_path_factory.mktemp("lab_home")))
    if "PYTEST_XDIST_WORKER" in os.environ and "LAB_TEST_HOME" not in os.environ:
        # The cached prerequisite runs (the default newari and detector runs the serve tests use, ...)
        # are shared by the xdist workers: runs.prerequisite locks each while it is built, so the
        # second worker to need one waits for it instead of building it again.
        shared = tmp_path_factory.getbasetemp().parent / "prerequisites"
        shared.mkdir(exist_ok=True)
        (home / "prerequisites").symlink_to(shared, target_is_directory=True)
    os.environ["LAB_HOME"] = str(home)
    return home


@pytest.fixture
def run_lab(lab_home, tmp_path):
    """Run the real `lab` entry point in a subprocess as a user types it: from a scratch folder, with
    the default relative run folder (./runs, no LAB_RUNS). Returns CompletedProcess (text). A recipe
    run that exits 0 must have said where its results went (`run folder: runs/...` without
    --output), the check issue 24's walk asks of every run, and print no library noise."""

    def _run(*args: str, env: dict | None = None, check: bool = True, timeout: int = 900):
        full_env = {**os.environ, "LAB_HOME": str(lab_home), **(env or {})}
        if not (env and "LAB_RUNS" in env):
            full_env.pop("LAB_RUNS", None)
        proc = subprocess.run([sys.executable, "-m", "labcli", *args], capture_output=True, text=True,
                              env=full_env, cwd=tmp_path, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"lab {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        if check and is_recipe_run(args):
            folders = [line[len("run folder: "):] for line in proc.stdout.splitlines() if line.startswith("run folder: ")]
            assert folders, f"lab {' '.join(args)} never printed its run folder\n{proc.stdout[-2000:]}"
            assert any(a.startswith("--output") for a in args) or folders[-1].startswith("runs/"), folders
        # library chatter lab's CLI hides (labcli.runs.quiet_libraries) must stay hidden
        noise = [line for line in (proc.stdout + proc.stderr).splitlines()
                 if "Setting accelerator to" in line or line.startswith("Failed to load ")]
        assert not noise, f"lab {' '.join(args)} printed library noise: {noise[:3]}"
        return proc

    return _run


def is_recipe_run(args) -> bool:
    """`lab VERB RECIPE ...` that runs an experiment (not --help, lab check, or a plain command)."""
    from labcli import registry

    if len(args) < 2 or args[0] not in registry.VERBS or "--help" in args or "-h" in args:
        return False
    return any(r.name == args[1] for r in registry.recipes_for(args[0]))


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
