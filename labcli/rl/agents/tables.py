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


def row(agent: str, level: str, repeats: list[list[dict]], trainings: list[dict] | None = None) -> dict:
    """One table row from `repeats` (one list per repeat: a training seed of a learner, an rng seed of
    random or a planner) of evaluation episodes, each a dict with success (bool), steps and
    walkthrough (ints). Rates are means over the repeats, `*_sd` their standard deviation across
    repeats (0 with one repeat); steps / walkthrough pools the successful episodes of all repeats."""
    results = [r for episodes in repeats for r in episodes]
    walk = float(np.mean([r["walkthrough"] for r in results]))
    per_repeat = [np.mean([r["success"] for r in episodes]) for episodes in repeats]
    within = [np.mean([r["success"] and r["steps"] <= 2 * r["walkthrough"] for r in episodes]) for episodes in repeats]
    ratios = [r["steps"] / r["walkthrough"] for r in results if r["success"]]
    out = {
        "agent": agent, "level": level, "repeats": len(repeats), "episodes": len(results), "walkthrough": round(walk, 1),
        "success": round(float(np.mean(per_repeat)), 3), "success_sd": round(float(np.std(per_repeat)), 3),
        "success_2x": round(float(np.mean(within)), 3), "success_2x_sd": round(float(np.std(within)), 3),
        "steps_per_walkthrough": round(float(np.mean(ratios)), 2) if ratios else None,
        "episodes_to_learn": None, "train_episodes": None,
    }
    if trainings:
        out["train_episodes"] = round(float(np.mean([t["episodes"] for t in trainings])), 1)
        out["episodes_to_learn"] = [t["learned"] for t in trainings]
    return out


def add_row(rows: list[dict], agent: str, level: str, repeats: list[list[dict]], trainings: list[dict] | None = None) -> None:
    """Append `row(...)` to `rows` and print its one-line headline (the recipes' progress log)."""
    rows.append(row(agent, level, repeats, trainings))
    last = rows[-1]
    print(f"  {agent:18s} {level:6s} success {last['success']:.2f} ± {last['success_sd']:.2f} "
          f"(within 2x walkthrough {last['success_2x']:.2f})")


COLUMNS = ["agent", "level", "walkthrough", "success", "success_2x", "steps_per_walkthrough", "episodes_to_learn", "train_episodes"]
LABELS = ["agent", "level", "walkthrough (mean steps)", "success (± sd over repeats)", "success within 2x walkthrough",
          "steps / walkthrough (successes)", f"episodes to learn (success ≥ {LEARNED} over {WINDOW}; per repeat)",
          "training episodes (mean)"]


def display(rows: list[dict]) -> list[dict]:
    """Rows as the terminal and report tables show them (mean ± sd; "-" for a repeat that never learned)."""
    def cell(r: dict, column: str):
        if column in ("success", "success_2x"):
            return f"{r[column]:.2f} ± {r[column + '_sd']:.2f}" if r["repeats"] > 1 else f"{r[column]:.2f}"
        if column == "episodes_to_learn" and r[column] is not None:
            return ", ".join("-" if v is None else str(v) for v in r[column])
        return r[column]
    return [{label: cell(r, c) for c, label in zip(COLUMNS, LABELS)} for r in rows]


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
