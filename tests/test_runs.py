"""The bottom layer: atomic writes keep the umask's permissions, folders are swapped whole, a run's
folder appears with its provenance on first use and disappears when a run fails before any result."""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from labcli import registry, runs


def test_atomic_files_and_folders_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        runs.write_text(tmp_path / "report.md", "hello")
        runs.write_with(tmp_path / "plot.png", lambda tmp: open(tmp, "wb").write(b"png"))
        runs.replace_dir(tmp_path / "model", lambda tmp: (tmp / "w.bin").write_bytes(b"1"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "plot.png").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "plot.png", "report.md"], "no temp files left"


def test_replace_dir_swaps_the_whole_folder_and_keeps_the_old_one_on_failure(tmp_path):
    target = tmp_path / "model"
    runs.replace_dir(target, lambda tmp: (tmp / "old.bin").write_bytes(b"old"))
    runs.replace_dir(target, lambda tmp: (tmp / "new.bin").write_bytes(b"new"))
    assert [p.name for p in target.iterdir()] == ["new.bin"]

    def fails(tmp):
        (tmp / "half.bin").write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    try:
        runs.replace_dir(target, fails)
    except RuntimeError:
        pass
    assert [p.name for p in target.iterdir()] == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_truncate_jsonl_drops_records_after_a_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for step in (1, 2, 3, 4):
        runs.append_jsonl(path, {"step": step})
    with open(path, "a") as fh:
        fh.write('{"step": 5, "lo')  # a torn last line
    runs.truncate_jsonl(path, 2)
    assert [r["step"] for r in runs.read_jsonl(path)] == [1, 2]


def test_run_folder_appears_on_first_use_with_its_provenance(tmp_path):
    cfg, recipe = registry.load("finetune", "tiny-lm", None, [])
    run = runs.Run(tmp_path / "r", "finetune", "tiny-lm", cfg)
    assert not (tmp_path / "r").exists()
    run.log(step=1, loss=2.0)
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["verb"] == "finetune" and saved["recipe"] == "tiny-lm"
    assert set(saved["lab"]) == {"commit", "dirty", "versions"}
    assert {"torch", "transformers", "peft", "bitsandbytes", "trl"} <= set(saved["lab"]["versions"])
    assert saved["train"]["max_steps"] == cfg.train.max_steps
    again, found = registry.load("finetune", None, tmp_path / "r" / "config.yaml", [])  # a run's config reruns it
    assert found == recipe and again == cfg


def test_a_failed_run_leaves_nothing_but_a_real_result_stays(tmp_path):
    cfg, _ = registry.load("finetune", "tiny-lm", None, [])
    empty = runs.Run(tmp_path / "empty", "finetune", "tiny-lm", cfg)
    empty.dir  # made, config.yaml only
    empty.discard_if_empty()
    assert not (tmp_path / "empty").exists()
    started = runs.Run(tmp_path / "started", "finetune", "tiny-lm", cfg)
    started.log(step=1, loss=1.0)
    started.discard_if_empty()
    assert (tmp_path / "started" / "metrics.jsonl").exists()


def same_second(monkeypatch, tmp_path):
    """Every run starts in the same second, under tmp_path/runs (not made yet)."""
    monkeypatch.setenv("LAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(runs.time, "strftime", lambda fmt, *when: "20261130-031500")


def test_runs_started_in_the_same_second_never_share_a_folder(tmp_path, monkeypatch):
    """The name is claimed with os.mkdir when the run starts, not when it first writes: a second run
    of the same recipe in the same second gets `-2`, and threads racing for one name each get their own."""
    import threading

    same_second(monkeypatch, tmp_path)
    first, second = runs.new_run_dir("finetune", "instruct"), runs.new_run_dir("finetune", "instruct")
    assert (first.name, second.name) == ("finetune-instruct-20261130-031500", "finetune-instruct-20261130-031500-2")
    assert first.is_dir() and second.is_dir() and not any(first.iterdir())  # claimed, still empty

    start, claimed = threading.Barrier(8), []
    def claim():
        start.wait()  # all eight ask for the same name at once
        claimed.append(runs.new_run_dir("finetune", "instruct"))
    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(claimed)) == 8 and not {first, second} & set(claimed)
    assert len(list((tmp_path / "runs").iterdir())) == 10


def test_a_claimed_folder_without_results_goes_with_the_runs_folder_it_made(tmp_path, monkeypatch):
    cfg, _ = registry.load("finetune", "tiny-lm", None, [])
    same_second(monkeypatch, tmp_path)
    failed = runs.Run(runs.new_run_dir("finetune", "tiny-lm"), "finetune", "tiny-lm", cfg)
    failed.dir  # config.yaml only: the run stopped before any result
    failed.discard_if_empty()
    assert not (tmp_path / "runs").exists(), "the claim made runs/, so it goes too"

    (tmp_path / "runs").mkdir()  # the user's own runs/ stays, empty or not
    runs.release_run_dir(runs.new_run_dir("finetune", "tiny-lm"))  # claimed, never used (a crash)
    assert (tmp_path / "runs").is_dir() and not any((tmp_path / "runs").iterdir())

    kept = runs.Run(runs.new_run_dir("finetune", "tiny-lm"), "finetune", "tiny-lm", cfg)
    kept.log(step=1, loss=1.0)
    kept.discard_if_empty()
    runs.release_run_dir(kept.root)
    assert (kept.root / "metrics.jsonl").exists()
    runs.release_run_dir(tmp_path / "runs")  # not claimed by a run: never removed
    assert (tmp_path / "runs").is_dir()


def test_ranks_of_a_hand_started_torchrun_need_one_folder(lab_main, tmp_path, monkeypatch):
    """Each rank would claim its own runs/ folder: refused unless --output names the shared one."""
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    proc = lab_main("finetune", "tiny-lm", "train.max_steps=1")
    assert proc.returncode == 2 and "need one run folder to share (hint: pass --output DIR" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_prerequisite_is_built_once_and_a_broken_cache_is_rebuilt(lab_home, capsys, monkeypatch):
    """The cached run is keyed by its command: built on first use, reused after, rebuilt without summary.json."""
    calls = []
    real_call = runs.subprocess.call

    def counting(cmd, *a, **k):
        calls.append(cmd)
        return real_call(cmd, *a, **k)

    monkeypatch.setattr(runs.subprocess, "call", counting)
    args = ["finetune", "tiny-lm", "train.max_steps=2", "train.batch_size=4", "train.micro_batch_size=4",
            "block_size=16", "vocab_size=200", "train.tensorboard=false"]
    first = runs.prerequisite(args[0], args[1], args[2:], "test needs a phishing run")
    assert (first / "summary.json").exists() and len(calls) == 1
    assert runs.prerequisite(args[0], args[1], args[2:], "again") == first and len(calls) == 1
    assert f"the cached `lab {' '.join(args)}` run" in capsys.readouterr().out
    (first / "summary.json").unlink()
    assert runs.prerequisite(args[0], args[1], args[2:], "broken") == first and len(calls) == 2
    assert (first / "summary.json").exists()


def test_a_bench_cell_is_kept_and_reused_only_under_the_same_settings(tmp_path):
    """ctx.cell: a finished cell survives a kill; `--resume auto` finds the run and skips the cell,
    unless the settings it ran under differ (then it runs again)."""
    from labcli.config import RecipeConfig

    cfg, calls = RecipeConfig(seed=3), []
    first = runs.Run(tmp_path / "bench", "bench", "x", cfg)
    assert first.cell("a", lambda: calls.append("a") or {"v": (1, 2)}) == {"v": [1, 2]}  # JSON types, as when kept
    ckpt = runs.latest_checkpoint(tmp_path / "bench")
    assert ckpt is not None and (ckpt / "COMPLETE").exists()
    resumed = runs.Run(tmp_path / "bench", "bench", "x", cfg, resume_from=ckpt)
    assert resumed.cell("a", lambda: calls.append("again") or {}) == {"v": [1, 2]} and calls == ["a"]
    assert resumed.kept("a", settings={"frames": 1}) is None and resumed.kept("b") is None
    changed = runs.Run(tmp_path / "bench", "bench", "x", RecipeConfig(seed=4), resume_from=ckpt)
    assert changed.cell("a", lambda: calls.append("changed") or {"v": 0}) == {"v": 0} and calls[-1] == "changed"
    fresh = runs.Run(tmp_path / "bench", "bench", "x", cfg)  # not resumed: every cell runs
    assert fresh.kept("a") is None


def test_a_second_builder_waits_for_the_first(tmp_path, monkeypatch):
    """runs.building_lock: while one holder builds a cached run, another (a second `lab serve`, a
    second test worker) says it waits and gets in only after the first is done. Ordered by events,
    not by sleeping: the second thread's "waiting" line is the signal that it tried and blocked."""
    import threading

    folder, order, tried = tmp_path / "prerequisites" / "finetune-x-123", [], threading.Event()
    monkeypatch.setattr(runs, "print", lambda *args, **kw: (order.append(args[0]), tried.set()), raising=False)

    def second():
        with runs.building_lock(folder, "waiting for the first"):
            order.append("second in")

    with runs.building_lock(folder, "unused"):
        order.append("first in")
        waiter = threading.Thread(target=second)
        waiter.start()
        tried.wait()  # the second printed that it waits, then blocked on the lock
        order.append("first out")
    waiter.join()
    assert order == ["first in", "waiting for the first", "first out", "second in"]
