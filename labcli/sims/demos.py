"""Tasks (a scene plus an instruction) from a seed, and expert demonstrations saved as a data set.

`generate_task(arm, seed)` draws a scene where the instruction's goal lies 0.35-0.5 m from the
start; in a share of the tasks (`blocked_share`) an obstacle stands across the straight path, so
the expert must go around it, on either side. Instructions come from two template sets: `train`
phrasings and `heldout` phrasings (other verbs, synonyms, other ways to say 'avoid') used only for
evaluation; all of them pass the grounded parser, which computes the goal.

`generate_demos` plans the expert's paths: one per unblocked task, and for a blocked task one on
each side (both must exist), so the data holds the same observation with two valid answers, as
human demonstrations around an obstacle do. It renders the overhead camera at the start. The data set is one .npz: joint waypoints every dt (padded with the last),
their lengths, start configurations, goals, obstacle features, images, instructions, scenes (JSON)
and modes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from labcli import runs
from labcli.sims.grounding import RELATIONS, Grounding, ground
from labcli.sims.planner import SIDES, Plan, PlanError, Planner
from labcli.sims.scene import (
    LAYOUTS,
    MAX_OBJECTS,
    Scene,
    SceneArm,
    Thing,
    footprint,
    front_to_world,
    random_object,
    random_obstacle,
)

TEMPLATES = {
    "train": {
        "above": ["move above the {o}", "reach the {o}", "go to the {o}", "hover over the {o}"],
        "left": ["go to the left of the {o}", "move to the left of the {o}"],
        "right": ["go to the right of the {o}", "move to the right of the {o}"],
        "front": ["go in front of the {o}", "move in front of the {o}"],
        "behind": ["go behind the {o}", "move behind the {o}"],
        "avoid": [", avoiding the {x}", " while avoiding the {x}", ", avoid the {x}"],
    },
    "heldout": {
        "above": ["put the gripper over the {o}", "bring the hand above the {o}"],
        "left": ["position the tool on the left side of the {o}"],
        "right": ["position the tool on the right side of the {o}"],
        "front": ["bring the gripper in front of the {o}"],
        "behind": ["head behind the {o}"],
        "avoid": [", steering clear of the {x}", " without hitting the {x}"],
    },
}
SYNONYMS = {"cube": "block", "ball": "sphere", "bowl": "dish", "cylinder": "can"}
RELATION_WEIGHTS = {"above": 0.4, "left": 0.15, "right": 0.15, "front": 0.15, "behind": 0.15}


@dataclass
class Task:
    scene: Scene
    instruction: str
    grounding: Grounding
    blocked: bool  # an obstacle stands across the straight path


def describe_object(thing: Thing, rng: np.random.Generator, heldout: bool) -> str:
    shape = SYNONYMS[thing.kind] if heldout and rng.random() < 0.5 else thing.kind
    words = ([thing.size_word] if rng.random() < 0.4 else []) + [thing.colour, shape]
    return " ".join(words)


def generate_task(arm: str, seed: int, blocked_share: float = 0.7, templates: str = "train") -> Task:
    """A scene and an instruction for it, reproducible from (arm, seed)."""
    rng = np.random.default_rng(seed)
    layout = LAYOUTS[arm]
    (u0, u1), vmax = layout.u_range, layout.v_max
    for _ in range(1000):
        start = np.array([rng.uniform(u0, u1), rng.uniform(-vmax, vmax)])
        relation = str(rng.choice(list(RELATION_WEIGHTS), p=list(RELATION_WEIGHTS.values())))
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 0.5)
        goal = start + dist * np.array([np.cos(angle), np.sin(angle)])
        if not (u0 <= goal[0] <= u1 and abs(goal[1]) <= vmax):
            continue
        taken: set = set()
        target = random_object(rng, layout, taken, 0.0, 0.0)
        du, dv = RELATIONS[relation]
        reach = 0.0 if relation == "above" else footprint(target) + 0.06
        centre = goal - reach * np.array([du, dv])
        if not (u0 - 0.05 <= centre[0] <= u1 + 0.05 and abs(centre[1]) <= vmax + 0.05):
            continue
        xy = front_to_world(layout, *centre)
        target = Thing(target.kind, (float(xy[0]), float(xy[1]), target.pos[2]), target.size, target.yaw, target.colour, target.size_word)
        blocked = bool(rng.random() < blocked_share)
        axis = (goal - start) / dist
        across = np.array([-axis[1], axis[0]])
        if blocked:
            mid = (start + goal) / 2 + rng.uniform(-0.03, 0.03) * axis
            obstacle = random_obstacle(rng, layout, mid, across)
        else:
            obstacle = None
            for _ in range(50):
                spot = np.array([rng.uniform(u0, u1), rng.uniform(-vmax, vmax)])
                if segment_distance(spot, start, goal) > 0.2 and np.linalg.norm(spot - centre) > 0.15:
                    obstacle = random_obstacle(rng, layout, spot, np.array([rng.normal(), rng.normal()]))
                    break
            if obstacle is None:
                continue
        objects = [target]
        for _ in range(int(rng.integers(2, MAX_OBJECTS))):
            for _ in range(30):
                u, v = rng.uniform(u0 - 0.05, u1 + 0.05), rng.uniform(-vmax - 0.05, vmax + 0.05)
                world = front_to_world(layout, u, v)
                if all(np.linalg.norm(world - np.array(o.pos[:2])) > 0.12 for o in objects) and \
                        np.linalg.norm(world - np.array(obstacle.pos[:2])) > 0.12 + footprint(obstacle):
                    objects.append(random_object(rng, layout, taken, u, v))
                    break
        order = rng.permutation(len(objects))
        start_xyz = (*front_to_world(layout, *start).tolist(), layout.travel_z)
        scene = Scene(arm, int(seed), [objects[i] for i in order], [obstacle], tuple(float(x) for x in start_xyz))
        words = TEMPLATES[templates]
        text = str(rng.choice(words[relation])).format(o=describe_object(target, rng, templates == "heldout"))
        if rng.random() < (0.8 if blocked else 0.2):
            text += str(rng.choice(words["avoid"])).format(x=obstacle.kind)
        return Task(scene, text, ground(text, scene), blocked)
    raise RuntimeError(f"no task found for seed {seed}")


def segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    s = np.clip((p - a) @ ab / (ab @ ab), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + s * ab)))


def obstacle_features(scene: Scene) -> np.ndarray:
    """What the policy is told about the obstacle: centre xy, footprint half-sizes, (cos 2yaw, sin 2yaw), top."""
    o = scene.obstacles[0]
    half = (o.size[0], o.size[1]) if o.kind == "wall" else (o.size[0], o.size[0])
    return np.array([o.pos[0], o.pos[1], *half, np.cos(2 * o.yaw), np.sin(2 * o.yaw), o.top], dtype=np.float32)


def plan_task(planner: Planner, task: Task, rng: np.random.Generator | None = None) -> tuple[np.ndarray, list[Plan]]:
    """The start configuration and the expert's plans: one ('direct') when nothing is in the way,
    else one per side, both required (PlanError otherwise) so that every blocked task has two valid modes."""
    planner.sarm.apply(task.scene)
    q0 = planner.start_configuration(np.array(task.scene.start))
    if not task.blocked:
        return q0, [planner.plan(q0, task.grounding.goal, None, rng)]
    plans = [planner.plan(q0, task.grounding.goal, side) for side in SIDES]
    if any(p.mode == "direct" for p in plans):
        raise PlanError("the obstacle is not in the way after all")
    return q0, plans


def tasks_with_plans(arm: str, count: int, first_seed: int, blocked_share: float, templates: str, planner: Planner,
                     progress: Callable[[int], None] | None = None) -> tuple[list[Task], list[list[Plan]], int]:
    """`count` tasks whose expert plans exist (both sides when blocked), from seeds first_seed, first_seed+1, ...;
    returns the tasks, their plans and how many seeds were skipped (unreachable or colliding paths)."""
    tasks, plans, skipped, seed = [], [], 0, first_seed
    while len(tasks) < count:
        task = generate_task(arm, seed, blocked_share, templates)
        seed += 1
        try:
            _, found = plan_task(planner, task)
        except PlanError:
            skipped += 1
            if skipped > 10 * count + 100:
                raise RuntimeError(f"the expert fails on almost every {arm} task") from None
            continue
        tasks.append(task)
        plans.append(found)
        if progress is not None:
            progress(len(tasks))
    return tasks, plans, skipped


def generate_demos(sarm: SceneArm, planner: Planner, scenes: int, first_seed: int, blocked_share: float,
                   image_size: int, progress: Callable[[int], None] | None = None) -> dict:
    """Expert demonstrations (see the module docstring): one per unblocked task, two per blocked task
    (left and right: the same observation with two valid answers); `skipped` counts discarded seeds."""
    tasks, plans, skipped = tasks_with_plans(sarm.arm.spec.name, scenes, first_seed, blocked_share, "train", planner, progress)
    flat_tasks = [t for t, ps in zip(tasks, plans) for _ in ps]
    flat_plans = [p for ps in plans for p in ps]
    return demo_arrays(sarm, flat_tasks, flat_plans, image_size) | {"skipped": np.array(skipped)}


def demo_arrays(sarm: SceneArm, tasks: list[Task], plans: list[Plan], image_size: int) -> dict:
    longest = max(len(p.q) for p in plans)
    nq = sarm.arm.nq
    q = np.zeros((len(plans), longest, nq), dtype=np.float32)
    for i, plan in enumerate(plans):
        q[i, : len(plan.q)] = plan.q
        q[i, len(plan.q):] = plan.q[-1]
    images = np.zeros((len(tasks), image_size, image_size, 3), dtype=np.uint8)
    for i, (task, plan) in enumerate(zip(tasks, plans)):
        sarm.apply(task.scene)
        images[i] = sarm.render(plan.q[0], image_size) if image_size else 0
    return {
        "q": q, "length": np.array([len(p.q) for p in plans]), "motion_steps": np.array([p.motion_steps for p in plans]),
        "goal": np.array([t.grounding.goal for t in tasks], dtype=np.float32),
        "obstacle": np.array([obstacle_features(t.scene) for t in tasks], dtype=np.float32),
        "image": images, "instruction": np.array([t.instruction for t in tasks]),
        "scene": np.array([t.scene.to_json() for t in tasks]), "mode": np.array([p.mode for p in plans]),
        "blocked": np.array([t.blocked for t in tasks]), "dt": np.array(plans[0].dt),
    }


def save_demos(path: Path, arrays: dict) -> None:
    runs.write_with(path, lambda tmp: np.savez_compressed(tmp, **arrays))  # the temp name keeps the .npz suffix


def load_demos(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
