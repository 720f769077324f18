"""Evaluating arm policies on held-out tasks: actors, partial observations, table rows, diversity.

`policy_actor` turns a learned policy into the `act(episodes)` that `rollout.run_episodes` calls,
optionally degrading what it observes (`Perturbation`: camera dropped, joints masked with their
data-set mean, Gaussian noise on the goal). `summarise` reduces episodes to one table row; mode
shares count blocked tasks only (left / right of the obstacle as seen along the direction of
travel; 'none' when the arm stopped before passing it). `diversity` reads the per-scene samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import torch

from labcli.sims.demos import obstacle_features
from labcli.sims.policy.policies import encode_words
from labcli.sims.rollout import Episode, Execution


@dataclass(frozen=True)
class Perturbation:
    name: str = "full observation"
    drop_image: bool = False
    mask_joints: tuple[int, ...] = ()  # 0-based joint indices replaced by the data set's mean angle
    goal_noise: float = 0.0  # m, standard deviation per axis
    extra: dict = field(default_factory=dict)


def observe(episodes: list[Episode], policy, perturbation: Perturbation, rng: np.random.Generator, device) -> dict:
    q = np.array([e.joint_angles() for e in episodes], dtype=np.float32)
    if perturbation.mask_joints:
        mean = policy.norm.q_mean.cpu().numpy()
        q[:, list(perturbation.mask_joints)] = mean[list(perturbation.mask_joints)]
    goal = np.array([e.task.grounding.goal for e in episodes], dtype=np.float32)
    if perturbation.goal_noise:
        goal = goal + rng.normal(0.0, perturbation.goal_noise, goal.shape).astype(np.float32)
    task = np.concatenate([goal, np.array([obstacle_features(e.task.scene) for e in episodes])], axis=1)
    images = np.array([e.image for e in episodes])
    if perturbation.drop_image:
        images = np.zeros_like(images)
    obs = {"q": q, "task": task, "words": encode_words([e.task.instruction for e in episodes]), "image": images}
    return {k: torch.as_tensor(v, device=device) for k, v in obs.items()}


def policy_actor(policy, ex: Execution, guidance: float = 1.0, sample_steps: int = 10, seed: int = 0,
                 perturbation: Perturbation = Perturbation(), device: str | torch.device = "cpu"):
    """act(episodes) -> (len, H, nq) waypoints from `policy`, seeded so that a run is reproducible."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    policy.eval()

    def act(episodes: list[Episode]) -> np.ndarray:
        obs = observe(episodes, policy, perturbation, rng, device)
        chunk = policy.act(obs, guidance=guidance, steps=sample_steps, generator=generator)
        return chunk[:, : ex.horizon].double().cpu().numpy()

    return act


def pct(values) -> float | None:
    values = list(values)
    return round(100.0 * float(np.mean(values)), 1) if values else None


def summarise(results: list[dict]) -> dict:
    """One row: success / collision / safety-stop %, tracking error, time to goal, mode shares on blocked tasks."""
    blocked = [r for r in results if r["blocked"]]
    times = [r["time_to_goal_s"] for r in results if r["time_to_goal_s"] is not None]
    return {
        "episodes": len(results),
        "success_pct": pct(r["success"] for r in results),
        "collision_pct": pct(r["collision"] for r in results),
        "safety_stop_pct": pct(r["safety_stop"] for r in results),
        "tracking_rms_rad": float(np.mean([r["tracking_rms_rad"] for r in results])),
        "time_to_goal_s": round(float(np.mean(times)), 2) if times else None,
        "blocked_episodes": len(blocked),
        "blocked_success_pct": pct(r["success"] for r in blocked),
        "blocked_collision_pct": pct(r["collision"] for r in blocked),
        "left_pct": pct(r["mode"] == "left" for r in blocked),
        "right_pct": pct(r["mode"] == "right" for r in blocked),
        "collided_with": collision_partners(results),
    }


def collision_partners(results: list[dict]) -> dict[str, int]:
    """Episodes per thing the arm first touched: obstacle, object, table, floor or self (another link)."""
    counts: dict[str, int] = {}
    for r in results:
        reason = r.get("estop_reason") or ""
        if reason.startswith("collision: "):
            a, b = reason.removeprefix("collision: ").split(" (depth")[0].split(" touches ")
            scene = [n.rstrip("0123456789") for n in (a, b) if n.rstrip("0123456789") in ("obstacle", "object", "table", "floor")]
            key = scene[0] if scene else "self"
            counts[key] = counts.get(key, 0) + 1
    return counts


def pairwise_distance(paths: list[np.ndarray]) -> float:
    """Mean over pairs of the mean joint-space distance (rad) between two time-aligned trajectories."""
    if len(paths) < 2:
        return 0.0
    n = min(len(p) for p in paths)
    return float(np.mean([np.linalg.norm(a[:n] - b[:n], axis=1).mean() for a, b in combinations(paths, 2)]))


def diversity(per_scene: list[list[dict]]) -> dict:
    """Per scene: share passing left / right among the samples, collisions, pairwise distance; then means."""
    rows = []
    for results in per_scene:
        n = len(results)
        left = sum(r["mode"] == "left" for r in results)
        right = sum(r["mode"] == "right" for r in results)
        rows.append({"samples": n, "left_pct": round(100.0 * left / n, 1), "right_pct": round(100.0 * right / n, 1),
                     "collision_pct": round(100.0 * sum(r["collision"] for r in results) / n, 1),
                     "success_pct": round(100.0 * sum(r["success"] for r in results) / n, 1),
                     "both_modes": bool(left and right),
                     "pairwise_distance_rad": round(pairwise_distance([r["q_path"] for r in results]), 4)})
    minority = [min(r["left_pct"], r["right_pct"]) for r in rows]
    return {"scenes": rows,
            "scenes_with_both_modes": sum(r["both_modes"] for r in rows),
            "mean_minority_mode_pct": round(float(np.mean(minority)), 1) if rows else None,
            "mean_pairwise_distance_rad": round(float(np.mean([r["pairwise_distance_rad"] for r in rows])), 4) if rows else None}
