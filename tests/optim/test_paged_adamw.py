"""lab's paged AdamW: torch AdamW's numbers, a counted resident budget, exact resume, DDP and FSDP2."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from labcli.engine import checkpoint
from labcli.engine.optimizers import make_optimizer
from labcli.errors import UserError
from labcli.optim import PagedAdamW

PAGE = 8192  # bytes: 1024 elements of each moment
BUDGET = 4 * PAGE


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.GELU(), torch.nn.Linear(300, 7),
                               torch.nn.LayerNorm(7), torch.nn.Linear(7, 7))  # the last one gets no grad


def forward(model, step: int) -> torch.Tensor:
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(step))
    return model[:4](x).pow(2).mean()


def run(model, opt, steps: range, sched=None):
    for step in steps:
        forward(model, step).backward()
        opt.step()
        if sched:
            sched.step()
        opt.zero_grad(set_to_none=True)


def paged(model, **kw) -> PagedAdamW:
    return PagedAdamW(model.parameters(), lr=1e-2, weight_decay=0.1, page_budget=BUDGET, page_bytes=PAGE, **kw)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs() / b.abs().clamp_min(1e-12)).max().item()


def test_matches_torch_adamw_over_20_steps():
    ref, model = net(), net()
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1)
    opt = paged(model)
    assert opt.memory_report()["state_bytes"] > BUDGET  # the state cannot all be resident
    schedule = lambda s: 1.0 / (1 + 0.1 * s)  # noqa: E731
    run(ref, ref_opt, range(20), torch.optim.lr_scheduler.LambdaLR(ref_opt, schedule))
    run(model, opt, range(20), torch.optim.lr_scheduler.LambdaLR(opt, schedule))
    for p, q in zip(model.parameters(), ref.parameters()):
        assert rel(p, q) <= 1e-6
    ours, theirs = opt.state_dict()["state"], ref_opt.state_dict()["state"]
    assert ours.keys() == theirs.keys() == {0, 1, 2, 3, 4, 5}  # the unused last Linear has no state
    for k in theirs:
        assert ours[k]["step"].item() == theirs[k]["step"].item() == 20
        for key in ("exp_avg", "exp_avg_sq"):
            assert rel(ours[k][key], theirs[k][key]) <= 1e-6


def test_resident_bytes_stay_within_budget():
    model = net()
    opt = paged(model)
    store = opt.store
    seen = []
    acquire = store.acquire

    def counting_acquire(page):  # an independent count of the resident pages at every access
        slot = acquire(page)
        seen.append(len(store.resident) * store.page_bytes)
        return slot

    store.acquire = counting_acquire
    run(model, opt, range(5))
    report = opt.memory_report()
    assert max(seen) <= BUDGET and report["max_resident_bytes"] <= BUDGET
    assert report["slot_bytes"] <= BUDGET
    assert report["state_bytes"] > 5 * BUDGET
    assert report["page_ins"] >= 5 * (report["pages"] - BUDGET // PAGE)  # really paged in and out
    assert report["page_outs"] > 0 and report["backing"] == "mmap-file"


def test_backing_file_leaves_nothing_behind(tmp_path):
    opt = paged(net(), store_dir=str(tmp_path))
    run(net(), opt, range(1))
    assert list(tmp_path.iterdir()) == []


def test_budget_below_two_pages_is_a_user_error():
    with pytest.raises(UserError, match="page budget"):
        PagedAdamW(net().parameters(), page_budget=PAGE, page_bytes=PAGE)


def test_registered_in_the_engine():
    opt = make_optimizer("lab-paged-adamw", net().parameters(), 1e-3, 0.0)
    assert isinstance(opt, PagedAdamW)


def test_resumes_from_an_engine_checkpoint(tmp_path):
    def fresh():
        model = net()[:4]  # every parameter trains: the engine's strict load wants state for each
        opt = paged(model)
        return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    model, opt, sched = fresh()
    run(model, opt, range(20))
    straight = copy.deepcopy(model.state_dict())

    model, opt, sched = fresh()
    run(model, opt, range(10))
    saved = checkpoint.save(tmp_path, 10, model, opt, sched, {}, "", keep_last=1)
    model, opt, sched = fresh()
    checkpoint.load(saved, model, opt, sched)
    assert opt.state[next(model.parameters())]["step"].item() == 10
    run(model, opt, range(10, 20))
    for key, value in model.state_dict().items():
        assert torch.equal(value, straight[key]), key


def test_ddp_and_fsdp2_match_torch_adamw_and_resume(tmp_path):
    """Two gloo processes: DDP and FSDP2 (DTensor shards), 20 steps, checkpoint at 10 and resume."""
    out = tmp_path / "dist.json"
    env = {**os.environ, "LAB_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(Path(__file__).with_name("dist_check.py")), str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["fsdp"]["is_dtensor"] and not report["ddp"]["is_dtensor"]
    for strategy in ("ddp", "fsdp"):
        r = report[strategy]
        assert r["param_vs_adamw"] <= 1e-6 and r["state_vs_adamw"] <= 1e-6, (strategy, r)
        assert r["resumed_vs_straight"] <= 1e-6, (strategy, r)
        assert 0 < r["max_resident_bytes"] <= r["budget_bytes"]


@pytest.mark.gpu
def test_cuda_pages_live_in_pinned_memory():
    ref, model = net().cuda(), net().cuda()
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1)
    opt = paged(model)
    assert opt.store.backing.is_pinned() and opt.store.slots.is_cuda
    for step in range(20):
        for m, o in ((ref, ref_opt), (model, opt)):
            x = torch.randn(16, 64, generator=torch.Generator().manual_seed(step)).cuda()
            m[:4](x).pow(2).mean().backward()
            o.step()
            o.zero_grad(set_to_none=True)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert rel(p, q) <= 1e-6
    assert opt.memory_report()["max_resident_bytes"] <= BUDGET
