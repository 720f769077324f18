"""The engine's step loop in-process on a 2-parameter model: cadences, schedule, several updates per
step, recipe state, early stopping, and resume after a crash (exact, no duplicate metrics)."""

from __future__ import annotations

import json

import pytest
import torch

from labcli.config import RecipeConfig
from labcli.engine.loop import LoopConfig, fit
from labcli.errors import UserError
from labcli.runs import Run, latest_checkpoint

CPU = torch.device("cpu")


class Cfg(LoopConfig):
    early_stopping_patience: int = 0


def make_run(folder, resume_from=None) -> Run:
    return Run(folder, "test", "loop", RecipeConfig(), resume_from=resume_from)


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(1, 1)


def noisy_step(updates: int = 1, crash_at: int | None = None):
    """A regression step on freshly drawn noise (so the RNG must come back on resume), `updates`
    optimizer updates per step, and a counter kept in loop.state."""

    def step(loop, i):
        if i == crash_at:
            raise RuntimeError("crash")
        for _ in range(updates):
            x = torch.rand(8, 1)
            loss = ((loop.model(x) - (3 * x + 1 + 0.1 * torch.randn(8, 1))) ** 2).mean()
            loss.backward()
            norm = loop.update()
        loop.state["seen"] += 8 * updates
        return {"loss": loss.item(), "grad_norm": norm, "seen": loop.state["seen"]}

    return step


def rows(run: Run) -> list[dict]:
    return [json.loads(line) for line in run.metrics_path.read_text().splitlines()]


def test_cadences_schedule_and_several_updates_per_step(tmp_path):
    cfg = Cfg(max_steps=6, lr=0.1, schedule="linear", warmup_steps=2, min_lr_ratio=0.0, log_every=2, eval_every=3,
              save_every=4, keep_last=5, tensorboard=False)
    run = make_run(tmp_path / "run")
    evals = []

    def evaluate(loop, i):
        evals.append(i)
        return {"eval_loss": 1.0, "probe": float(i)}

    result = fit(model(), noisy_step(updates=3), run, cfg, device=CPU, seed=0, evaluate=evaluate, eval_at_start=True,
                 state={"seen": 0}, progress=False)
    assert evals == [0, 3, 6]
    logged = rows(run)
    assert [r["step"] for r in logged if "loss" in r] == [2, 4, 6]
    assert [r["step"] for r in logged if "probe" in r] == [0, 3, 6]
    # warm-up over 2 steps (0.05, 0.1), then linear decay to 0 at step 6; the LR logged after step i is step i+1's
    assert [r["lr"] for r in logged if "loss" in r] == pytest.approx([0.1, 0.05, 0.0])
    assert result.optimizer.state[next(iter(result.optimizer.state))]["step"] == 18  # 3 updates x 6 steps
    assert result.state["seen"] == 6 * 3 * 8 and result.steps == 6 and not result.stopped_early
    assert sorted(p.name for p in (run.dir / "checkpoints").iterdir()) == ["step-00000004", "step-00000006"]


def test_resume_after_a_crash_is_exact_and_logs_each_step_once(tmp_path):
    cfg = Cfg(max_steps=6, lr=0.05, save_every=2, tensorboard=False)
    straight = make_run(tmp_path / "straight")
    a = fit(model(), noisy_step(), straight, cfg, device=CPU, seed=1, state={"seen": 0}, progress=False)

    crashed = make_run(tmp_path / "crashed")
    with pytest.raises(RuntimeError, match="crash"):
        fit(model(), noisy_step(crash_at=6), crashed, cfg, device=CPU, seed=1, state={"seen": 0}, progress=False)
    assert [r["step"] for r in rows(crashed)] == [1, 2, 3, 4, 5]  # step 5 came after the last checkpoint (4)
    torch.manual_seed(123)  # the resumed run must not depend on the RNG state it starts with
    resumed = make_run(tmp_path / "crashed", resume_from=latest_checkpoint(tmp_path / "crashed"))
    b = fit(model(), noisy_step(), resumed, cfg, device=CPU, seed=1, state={"seen": 0}, progress=False)
    assert torch.equal(a.model.weight, b.model.weight) and torch.equal(a.model.bias, b.model.bias)
    assert b.state["seen"] == a.state["seen"] == 48  # the recipe's counter came back from the checkpoint
    assert [r["step"] for r in rows(resumed)] == list(range(1, 7))
    assert [r["loss"] for r in rows(resumed)] == [r["loss"] for r in rows(straight)]


def test_early_stopping_on_eval_loss(tmp_path):
    cfg = Cfg(max_steps=20, eval_every=1, early_stopping_patience=2, tensorboard=False)
    run = make_run(tmp_path / "run")
    losses = iter([3.0, 2.0, 2.5, 2.4, 1.0])
    result = fit(model(), noisy_step(), run, cfg, device=CPU, evaluate=lambda loop, i: {"eval_loss": next(losses)},
                 state={"seen": 0}, progress=False)
    assert result.stopped_early and result.steps == 4 and result.eval["eval_loss"] == 2.4
    assert (run.dir / "checkpoints" / "step-00000004" / "COMPLETE").exists()


def test_configs_without_the_key_never_stop_early(tmp_path):
    run = make_run(tmp_path / "run")
    result = fit(model(), noisy_step(), run, LoopConfig(max_steps=3, eval_every=1, tensorboard=False), device=CPU,
                 evaluate=lambda loop, i: {"eval_loss": float(i)}, state={"seen": 0}, progress=False)
    assert not result.stopped_early and result.steps == 3


def test_a_corrupt_or_incomplete_checkpoint_is_a_user_error(tmp_path):
    cfg = Cfg(max_steps=2, tensorboard=False)
    fit(model(), noisy_step(), make_run(tmp_path / "run"), cfg, device=CPU, state={"seen": 0}, progress=False)
    ckpt = latest_checkpoint(tmp_path / "run")
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="is corrupt"):
        fit(model(), noisy_step(), make_run(tmp_path / "run", ckpt), cfg, device=CPU, state={"seen": 0}, progress=False)
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(UserError, match="is incomplete: model.safetensors missing"):
        fit(model(), noisy_step(), make_run(tmp_path / "run", ckpt), cfg, device=CPU, state={"seen": 0}, progress=False)
