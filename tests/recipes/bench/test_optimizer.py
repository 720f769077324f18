"""`lab bench optimizer` through the real CLI: cells, honest bnb labels, lab's paged AdamW in budget."""

from __future__ import annotations

import json


def test_paged_bench_single_and_fsdp(run_lab, tmp_path):
    out = tmp_path / "bench"
    run_lab("bench", "optimizer", "--paged", "--strategy", "single,fsdp", "--steps", "3", "--page-budget", "0.5",
            "batch_size=4", "block_size=32", "--output", str(out))
    summary = json.loads((out / "summary.json").read_text())
    cells = {(c["strategy"], c["optimizer"]): c for c in summary["cells"]}
    names = ["adamw", "bnb-paged-adamw", "bnb-paged-adamw8bit", "lab-paged-adamw"]
    assert set(cells) == {(s, o) for s in ("single", "fsdp") for o in names}  # --paged drops AdamW8bit

    for strategy in ("single", "fsdp"):
        ours = cells[(strategy, "lab-paged-adamw")]
        assert ours["status"] == "ok"
        assert ours["paging"]["max_resident_bytes"] <= 0.5 * 2**20 < ours["paging"]["state_bytes"]
        assert ours["max_loss_dev_vs_adamw"] <= 1e-5  # AdamW's math, so AdamW's loss curve
        assert len(ours["losses"]) == 3
    # bnb on the CPU is not paged, and cannot step FSDP2's DTensors: the cells say so.
    assert "falls back" in cells[("single", "bnb-paged-adamw")]["note"]
    for name in ("bnb-paged-adamw", "bnb-paged-adamw8bit"):
        assert cells[("fsdp", name)]["status"] == "cannot run"
    report = (out / "report.md").read_text()
    assert "Hardware:" in report and "Batch: 4 x 32 tokens" in report and "**cannot run**" in report
    assert (out / "loss_curves.png").stat().st_size > 0 and (out / "memory.png").stat().st_size > 0
    assert (out / "cells" / "single-lab-paged-adamw" / "metrics.jsonl").exists()


def test_bad_optimizer_name_is_one_line(run_lab):
    proc = run_lab("bench", "optimizer", "--optimizers", "adamw,adamw9bit", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown optimizers 'adamw9bit'") and "Traceback" not in proc.stderr
