"""`lab bench optimizer`: one process per cell, honest bnb labels, lab's paged AdamW measured, a memory cap."""

from __future__ import annotations

import json

import pytest

from labcli.recipes.bench import optimizer as bench


@pytest.mark.slow
def test_cells_in_their_own_processes_and_the_memory_cap(run_lab, tmp_path):
    out = tmp_path / "bench"
    stdout = run_lab("bench", "optimizer", "optimizers=[adamw,bnb-paged-adamw,lab-paged-adamw]",
                     "strategies=[single,fsdp]", "train.max_steps=3", "train.batch_size=4", "block_size=32",
                     "page_budget=0.5", "memory_cap.width=256", "memory_cap.max_steps=2", "--output", str(out)).stdout
    summary = json.loads((out / "summary.json").read_text())
    cells = {(c["strategy"], c["optimizer"]): c for c in summary["cells"]}
    assert set(cells) == {(s, o) for s in ("single", "fsdp") for o in ("adamw", "bnb-paged-adamw", "lab-paged-adamw")}
    for strategy in ("single", "fsdp"):
        ours = cells[(strategy, "lab-paged-adamw")]
        assert ours["status"] == "ok" and len(ours["losses"]) == 3
        assert ours["max_loss_dev_vs_adamw"] <= 1e-5  # AdamW's math, so AdamW's loss curve
        assert ours["paging"]["page_outs"] > 0 and ours["state_bytes"] > 0.5 * 2**20
        assert 0 < ours["state_in_ram_bytes"] <= 0.5 * 2**20  # measured (mincore), within the budget
        assert cells[(strategy, "adamw")]["state_in_ram_bytes"] >= cells[(strategy, "adamw")]["state_bytes"]
        assert (out / "cells" / f"{strategy}-lab-paged-adamw" / "metrics.jsonl").exists()  # its own run folder
    # bnb on the CPU is not paged, and cannot step FSDP2's DTensors: the cells say so.
    assert "falls back" in cells[("single", "bnb-paged-adamw")]["note"]
    assert cells[("fsdp", "bnb-paged-adamw")]["status"] == "cannot run"

    uncapped, adamw, ours = summary["cap"]["cells"]
    assert uncapped["status"] == "ok" and not uncapped["capped"]
    assert adamw["status"] == "stopped" and "can't allocate memory" in adamw["note"]
    assert ours["status"] == "ok" and ours["max_loss_dev_vs_adamw"] <= 1e-5
    assert ours["data_peak_mb"] < ours["cap_mb"] < uncapped["data_peak_mb"] - uncapped["data_at_start_mb"] + ours["data_at_start_mb"]

    report = (out / "report.md").read_text()
    assert "Hardware:" in report and "Batch: 4 x 32 tokens" in report and "**cannot run**" in report
    assert "## Under a memory cap" in report and "RLIMIT_DATA" in report
    assert "bench optimizer" in stdout and "under a memory cap" in stdout  # the tables, printed
    assert (out / "loss_curves.png").stat().st_size > 0 and (out / "memory.png").stat().st_size > 0


def cell(optimizer, status="ok", dev=0.0, capped=None):
    return {"optimizer": optimizer, "strategy": "single", "status": status, "note": "boom", "capped": capped,
            "max_loss_dev_vs_adamw": dev}


def test_lab_optimizer_failing_fails_the_run_and_others_do_not():
    assert bench.failures([cell("adamw"), cell("bnb-paged-adamw", "cannot run"), cell("lab-paged-adamw")], []) == []
    assert bench.failures([cell("lab-paged-adamw", "cannot run")], [])[0].startswith("lab-paged-adamw (single) cannot run")
    assert "losses differ" in bench.failures([cell("lab-paged-adamw", dev=1e-3)], [])[0]
    # under the cap AdamW is expected to stop; lab's optimizer is not
    capped = [cell("adamw", capped=False), cell("adamw", "stopped", capped=True)]
    assert bench.failures([], capped) == []
    assert "capped" in bench.failures([], [*capped, cell("lab-paged-adamw", "stopped", capped=True)])[0]


def test_unknown_optimizer_is_one_line(lab_main, tmp_path):
    proc = lab_main("bench", "optimizer", "optimizers=[adamw,adamw9bit]")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: key 'optimizers.1' has bad value 'adamw9bit'")
    assert not (tmp_path / "runs").exists()


def test_page_dir_on_tmpfs_is_refused_before_any_cell(lab_main, tmp_path):
    from pathlib import Path

    from labcli.optim.paged_store import filesystem_type

    if filesystem_type(Path("/dev/shm")) is None:
        pytest.skip("/dev/shm is not tmpfs here")
    proc = lab_main("bench", "optimizer", "page_dir=/dev/shm/lab-pages")
    assert proc.returncode == 2 and proc.stderr.startswith("error: page_dir /dev/shm/lab-pages is on tmpfs, which is RAM")
    assert not (tmp_path / "runs").exists()
