"""lab's paged AdamW: torch AdamW's numbers, state on disk with measured RAM, a cap, exact resume, DDP/FSDP2."""

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
from labcli.optim.memory import data_cap

PAGE = 8192  # bytes: 1024 elements of each moment
BUDGET = 4 * PAGE


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.GELU(), torch.nn.Linear(300, 7),
                               torch.nn.LayerNorm(7), torch.nn.Linear(7, 7))  # the last one gets no grad


def forward(model, step: int) -> torch.Tensor:
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(step))
    return model[:4](x).pow(2).mean()


def run(model, opt, steps: range, sched=None) -> list[float]:
    losses = []
    for step in steps:
        loss = forward(model, step)
        loss.backward()
        opt.step()
        if sched:
            sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def paged(model, **kw) -> PagedAdamW:
    return PagedAdamW(model.parameters(), lr=1e-2, weight_decay=0.1, page_budget=BUDGET, page_bytes=PAGE, **kw)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs() / b.abs().clamp_min(1e-12)).max().item()


@pytest.mark.parametrize("store", ["file", "slots"])
def test_matches_torch_adamw_over_20_steps(store):
    ref, model = net(), net()
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1)
    opt = paged(model, store=store)
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
    assert opt.memory_report()["page_outs"] > 0


def test_page_file_in_ram_is_measured_and_stays_within_budget():
    model = net()
    opt = paged(model)
    run(model, opt, range(5))
    report = opt.memory_report()
    assert report["measured"] and report["backing"] == "page file"
    assert report["state_bytes"] > 5 * BUDGET
    assert report["page_outs"] >= 5 * (report["pages"] - BUDGET // PAGE)  # really written out, step after step
    # mincore over the mapping right before every drop: the pages of the window were in RAM, never more
    assert BUDGET // 2 < report["max_resident_bytes"] <= BUDGET
    assert report["resident_bytes"] == 0  # between steps the whole state is on disk, none of it in RAM


def test_page_file_lives_in_page_dir_and_leaves_nothing_behind(tmp_path):
    opt = paged(net(), page_dir=str(tmp_path))
    where = os.readlink(f"/proc/self/fd/{opt.store.fd}")
    assert where.startswith(str(tmp_path)) and where.endswith("(deleted)")
    run(net(), opt, range(1))
    assert list(tmp_path.iterdir()) == []


def test_default_page_dir_is_under_lab_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    opt = make_optimizer("lab-paged-adamw", net().parameters(), 1e-3, 0.0)
    assert isinstance(opt, PagedAdamW)
    assert os.readlink(f"/proc/self/fd/{opt.store.fd}").startswith(str(tmp_path / "paged-optimizer"))


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
def test_tmpfs_page_dir_is_refused_unless_allowed():
    from labcli.optim.paged_store import filesystem_type

    if filesystem_type(Path("/dev/shm")) is None:
        pytest.skip("/dev/shm is not tmpfs here")
    with pytest.raises(UserError, match="is on tmpfs, which is RAM"):
        paged(net(), page_dir="/dev/shm")
    assert paged(net(), page_dir="/dev/shm", allow_tmpfs=True).store.path_kind == "tmpfs"


def test_budget_below_two_pages_is_a_user_error():
    with pytest.raises(UserError, match="page budget"):
        PagedAdamW(net().parameters(), page_budget=PAGE, page_bytes=PAGE)


def test_finishes_under_a_memory_cap_that_stops_torch_adamw():
    """Private memory capped at what training needs plus half of AdamW's state: AdamW cannot
    allocate its moments, the paged one (state in the page file) trains with AdamW's losses."""

    def wide():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Tanh(), torch.nn.Linear(1024, 1024))

    def train(model, make):
        losses = []
        for step in range(3):
            x = torch.randn(8, 1024, generator=torch.Generator().manual_seed(step))
            loss = model(x).pow(2).mean()
            loss.backward()
            if step == 0:
                opt = make(model.parameters())
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        return losses, opt

    def adamw(params):
        return torch.optim.AdamW(params, lr=1e-3)

    def lab(params):
        return PagedAdamW(params, lr=1e-3, weight_decay=1e-2, page_budget=2**20, page_bytes=2**18)

    n = sum(p.numel() for p in wide().parameters())
    reference, _ = train(wide(), adamw)
    extra = 4 * n + 2 * 2**20 + 4 * n  # gradients (8 MB), 2 MB of slack, half of AdamW's 8 bytes per parameter
    for make in (adamw, lab):
        model = wide()
        with data_cap(extra):
            if make is adamw:
                with pytest.raises(RuntimeError, match="can't allocate memory"):
                    train(model, make)
            else:
                losses, opt = train(model, make)
        del model
    assert losses == reference
    assert opt.memory_report()["page_outs"] > 0


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
    assert opt.store.resident_bytes() == 0  # the loaded state went to the page file, not RAM
    run(model, opt, range(10, 20))
    for key, value in model.state_dict().items():
        assert torch.equal(value, straight[key]), key


@pytest.mark.slow
def test_ddp_and_fsdp2_page_out_and_match_torch_adamw(tmp_path):
    """Two gloo processes: DDP and FSDP2 (DTensor shards) on a model whose state is larger than the
    page budget: pages go out, losses and parameters equal torch AdamW's; checkpoint at 10, resume."""
    out = tmp_path / "dist.json"
    env = {**os.environ, "LAB_THREADS": "1", "OMP_NUM_THREADS": "1", "LAB_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(Path(__file__).with_name("dist_check.py")), str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["fsdp"]["is_dtensor"] and not report["ddp"]["is_dtensor"]
    for strategy in ("ddp", "fsdp"):
        r = report[strategy]
        assert r["state_bytes"] > r["budget_bytes"] and r["page_outs"] > 0, (strategy, r)
        assert r["max_loss_diff"] <= 1e-6, (strategy, r)
        assert r["param_vs_adamw"] <= 1e-6 and r["state_vs_adamw"] <= 1e-6, (strategy, r)
        assert r["resumed_vs_straight"] <= 1e-6, (strategy, r)
        assert 0 < r["max_resident_bytes"] <= r["budget_bytes"]


@pytest.mark.gpu
def test_cuda_pages_live_in_pinned_memory():
    ref, model = net().cuda(), net().cuda()
    # foreach=False: on CUDA torch defaults to its multi-tensor AdamW, whose rounding differs in the last
    # bits (Adam magnifies that on near-zero weights); lab's update mirrors the single-tensor one.
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
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
