"""lab reproduce dreamerv3: the verdicts follow the numbers, a bad env is one line, a tiny real run (slow)."""

import json

import pytest

from labcli.recipes.reproduce import dreamerv3


def rows(dreamer_cp: float, ppo_cp: float, dreamer_mg: float, ppo_mg: float) -> list[dict]:
    cfg = dreamerv3.Config()
    out = []
    for agent, cp, mg in (("DreamerV3", dreamer_cp, dreamer_mg), ("PPO (lab)", ppo_cp, ppo_mg)):
        for env, value in (("CartPole-v1", cp), (cfg.minigrid_env, mg)):
            out.append({"agent": agent, "env": env, "eval_return": value, "eval_std": 0.0, "last10_train_return": value,
                        "steps_to_bar": None, "env_steps": 100})
    return out


EXACT = {"two_hot_max_rel_error": 1e-15, "kl_balance_grad_max_error": 0.0, "kl_positions": 64, "kl_positions_below_free_nat": 32}


def test_verdicts_follow_the_bars_and_the_ppo_comparison():
    cfg = dreamerv3.Config()
    good = {c.claim.split(":")[0]: c.verdict for c in dreamerv3.claims_for(cfg, rows(250, 100, 0.95, 0.5), EXACT)}
    assert set(good.values()) == {"holds"}
    bad = dreamerv3.claims_for(cfg, rows(30, 100, 0.2, 0.5), EXACT)
    assert [c.verdict for c in bad] == ["does not hold", "does not hold", "holds", "holds", "does not hold"]
    mixed = dreamerv3.claims_for(cfg, rows(120, 100, 0.6, 0.9), EXACT)
    assert [mixed[0].verdict, mixed[1].verdict, mixed[-1].verdict] == ["partly", "partly", "partly"]


def test_exact_checks_hold_in_the_run():
    exact = dreamerv3.exact_checks()
    assert exact["two_hot_max_rel_error"] < 1e-9 and exact["kl_balance_grad_max_error"] < 1e-12
    assert 0 < exact["kl_positions_below_free_nat"] < exact["kl_positions"]  # both regimes are exercised


def test_plan_counts_updates_from_the_train_ratio():
    cfg = dreamerv3.Config()
    updates = (cfg.cartpole_steps - cfg.dreamer.prefill) * cfg.dreamer.train_ratio // (cfg.dreamer.batch_size * cfg.dreamer.seq_len)
    assert f"{updates:,} updates" in dreamerv3.plan(cfg)


def test_unknown_minigrid_env_is_one_line_error(lab_main):
    result = lab_main("reproduce", "dreamerv3", "minigrid_env=MiniGrid-Emty-5x5-v0")
    assert result.returncode == 2 and "MiniGrid-Emty-5x5-v0" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_tiny_run_writes_the_claims_table(run_lab, tmp_path):
    run_lab("reproduce", "dreamerv3", "--output", str(tmp_path / "r"), "cartpole_steps=80", "minigrid_steps=60",
            "dreamer.prefill=40", "dreamer.batch_size=2", "dreamer.seq_len=8", "dreamer.horizon=3", "eval_episodes=1",
            "ppo_cartpole.num_envs=1", "ppo_cartpole.num_steps=32", "ppo_minigrid.num_envs=1", "ppo_minigrid.num_steps=32")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert [(r["agent"], r["env"]) for r in summary["runs"]] == [
        (agent, env) for env in ("CartPole-v1", "MiniGrid-Empty-5x5-v0") for agent in ("DreamerV3", "PPO (lab)", "random")]
    assert summary["runs"][0]["updates"] == (80 - 40) * 8 // 16
    assert len(summary["claims"]) == 5 and summary["exact"]["two_hot_max_rel_error"] < 1e-9
    assert (tmp_path / "r" / "returns_CartPole-v1.png").exists() and (tmp_path / "r" / "report.md").exists()
