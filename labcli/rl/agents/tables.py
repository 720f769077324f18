"""What `lab simulate textworld` and `lab simulate babyai` report: one row per agent and level, the
success-versus-walkthrough plot, and the episodes a learner needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LEARNED = 0.8  # "episodes to learn": the first training episode at which the last WINDOW episodes' success rate reaches this
WINDOW = 20


def episodes_to_learn(wins: list[bool], threshold: float = LEARNED, window: int = WINDOW) -> int | None:
    for i in range(window, len(wins) + 1):
        if np.mean(wins[i - window:i]) >= threshold:
            return i
    return None


def row(agent: str, level: str, results: list[dict], training: dict | None = None) -> dict:
    """results: one dict per evaluation episode with success (bool), steps and walkthrough (ints)."""
    wins = [r for r in results if r["success"]]
    walk = float(np.mean([r["walkthrough"] for r in results]))
    ratios = [r["steps"] / r["walkthrough"] for r in wins]
    out = {
        "agent": agent, "level": level, "episodes": len(results), "walkthrough": round(walk, 1),
        "success": round(len(wins) / max(1, len(results)), 3),
        "success_2x": round(sum(r["steps"] <= 2 * r["walkthrough"] for r in wins) / max(1, len(results)), 3),
        "steps_per_walkthrough": round(float(np.mean(ratios)), 2) if ratios else None,
        "episodes_to_learn": None, "train_episodes": None,
    }
    if training is not None:
        out["train_episodes"] = training["episodes"]
        out["episodes_to_learn"] = training["learned"]
    return out


COLUMNS = ["agent", "level", "walkthrough", "success", "success_2x", "steps_per_walkthrough", "episodes_to_learn", "train_episodes"]
LABELS = ["agent", "level", "walkthrough (mean steps)", "success", "success within 2x walkthrough",
          "steps / walkthrough (successes)", f"episodes to learn (success ≥ {LEARNED} over {WINDOW})", "training episodes"]


def plot(rows: list[dict], path: Path, title: str) -> Path:
    """Success rate against the mean walkthrough length of each level, one line per agent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labcli.eval.plots import save

    fig, ax = plt.subplots(figsize=(7, 4))
    for agent in dict.fromkeys(r["agent"] for r in rows):
        mine = sorted((r["walkthrough"], r["success"]) for r in rows if r["agent"] == agent)
        ax.plot([m[0] for m in mine], [m[1] for m in mine], "o-", label=agent)
    ax.set_xlabel("walkthrough length (mean steps of the expert per level)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save(fig, path)
