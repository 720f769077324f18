"""Scenes in geom slots, the expert planner's two sides, receding-horizon execution of its plan."""

from __future__ import annotations

import numpy as np
import pytest

from labcli.sims.demos import TEMPLATES, generate_task, plan_task
from labcli.sims.grounding import ground
from labcli.sims.planner import Planner, side_of
from labcli.sims.scene import Scene, load_scene_arm


@pytest.fixture(scope="module")
def franka():
    sarm = load_scene_arm("franka")
    return sarm, Planner(sarm, dt=0.2)


def test_tasks_are_reproducible_and_their_instructions_ground():
    a, b = generate_task("franka", 11), generate_task("franka", 11)
    assert a.instruction == b.instruction and a.scene.to_json() == b.scene.to_json()
    assert Scene.from_json(a.scene.to_json()) == a.scene
    for seed in range(20):
        task = generate_task("ur5", seed, templates="heldout")
        assert np.allclose(ground(task.instruction, task.scene).goal, task.grounding.goal)
    phrasings = {t for rel in ("above", "left") for t in TEMPLATES["train"][rel]}
    assert not phrasings & {t for rel in ("above", "left") for t in TEMPLATES["heldout"][rel]}


def test_apply_writes_the_scene_into_slots_and_hides_the_rest(franka):
    sarm, _ = franka
    task = generate_task("franka", 3)
    sarm.apply(task.scene)
    model = sarm.arm.model
    used = sarm.object_slots[: len(task.scene.objects)]
    assert np.allclose(model.geom_pos[used[0]], task.scene.objects[0].pos)
    assert all(model.geom_contype[g] == 1 for g in used)
    assert all(model.geom_contype[g] == 0 and model.geom_rgba[g, 3] == 0 for g in sarm.object_slots[len(task.scene.objects):])
    image = sarm.render(sarm.arm.home, 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and image.std() > 5  # table, objects and floor differ


@pytest.mark.xfail(strict=True, reason="known bug: the world body's mid-phase BVH is built at compile time around the "
                   "hidden slots and culls every contact with the scene's objects and obstacles (fix: mjDSBL_MIDPHASE in "
                   "load_scene_arm; the planner then needs wider detours, see docs/results/sims.md)")
def test_an_arm_inside_the_obstacle_is_a_contact(franka):
    """The joint-space average of the left and right plans runs through the obstacle: the safety
    monitor must see that contact."""
    import mujoco

    from labcli.sims.safety import SafetyMonitor

    sarm, planner = franka
    task = next(t for t in (generate_task("franka", s, blocked_share=1.0) for s in range(20)) if t.blocked)
    _, (left, right) = plan_task(planner, task)
    n = min(len(left.q), len(right.q))
    middle = 0.5 * (left.q[:n] + right.q[:n])
    sarm.apply(task.scene)
    model, data, slot = sarm.arm.model, sarm.arm.data, sarm.obstacle_slots[0]
    fromto = np.zeros(6)
    inside = 0
    for q in middle:
        data.qpos[: sarm.arm.nq] = q
        mujoco.mj_forward(model, data)
        if min(mujoco.mj_geomDistance(model, data, slot, g, 0.1, fromto) for g in range(model.ngeom) if model.geom_bodyid[g] > 0) < -0.005:
            inside += 1
            assert "world/floor touches" in (SafetyMonitor(sarm.arm).collision() or "")
    assert inside > 0


def test_blocked_task_has_a_plan_on_each_side(franka):
    sarm, planner = franka
    task = next(t for t in (generate_task("franka", s, blocked_share=1.0) for s in range(20)) if t.blocked)
    q0, plans = plan_task(planner, task)
    assert [p.mode for p in plans] == ["left", "right"]
    start, goal, wall = np.array(task.scene.start), task.grounding.goal, task.scene.obstacles[0]
    for plan in plans:
        assert np.allclose(plan.q[0], q0)
        assert np.linalg.norm(plan.ee[plan.motion_steps - 1] - goal) < 3e-3  # IK reached the goal
        side, offset = side_of(plan.ee[:, :2], start, goal, wall)
        assert side == plan.mode and abs(offset) > planner.clearance  # passes beside the obstacle, not through
    straight = start[:2] + np.linspace(0, 1, 50)[:, None] * (goal[:2] - start[:2])
    assert side_of(straight, start, goal, wall)[0] in ("left", "right") and abs(side_of(straight, start, goal, wall)[1]) < 0.05


def test_expert_plan_tracked_by_the_pid_reaches_the_goal_without_safety_stop(franka):
    from labcli.sims.rollout import Execution, expert_actor, run_episodes

    sarm, planner = franka
    task = next(t for t in (generate_task("franka", s, blocked_share=1.0) for s in range(20)) if t.blocked)
    q0, plans = plan_task(planner, task)
    ex = Execution(policy_dt=0.2, horizon=8, execute=4, max_time=5.0)
    result = run_episodes([sarm.copy()], [task], [q0], [None], ex, expert_actor({id(task): plans[1].q}, ex))[0]
    assert result["success"] and not result["safety_stop"] and result["mode"] == "right"
    assert result["tracking_rms_rad"] < 5e-3 and result["final_distance_m"] < 0.01
