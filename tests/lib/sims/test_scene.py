"""Scenes in geom slots, the expert planner's two sides, receding-horizon execution of its plan."""

from __future__ import annotations

import numpy as np
import pytest

from labcli.sims.control import solve_ik
from labcli.sims.demos import TEMPLATES, generate_task, plan_task
from labcli.sims.grounding import ground
from labcli.sims.planner import Planner, side_of
from labcli.sims.safety import SafetyMonitor
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


def obstacle_contacts(sarm, q) -> list[float]:
    """Depths (m, < 0 inside) of MuJoCo's contacts between the arm at q and the scene's obstacle (mj_forward)."""
    import mujoco  # after labcli.sims, which sets MUJOCO_GL=egl for the render test

    model, data, slot = sarm.arm.model, sarm.arm.data, sarm.obstacle_slots[0]
    data.qpos[: sarm.arm.nq] = q
    mujoco.mj_forward(model, data)
    return [c.dist for c in data.contact[: data.ncon] if slot in (c.geom1, c.geom2)]


def test_an_arm_inside_the_obstacle_is_a_contact_and_a_clear_one_is_not(franka):
    """The end effector at the obstacle's centre (its top is above the travel height) is inside it:
    MuJoCo's contact query and the safety monitor must see that; the start configuration is clear.
    (Before the mid-phase was turned off, the world body's compile-time BVH culled every such contact.)"""
    import mujoco

    sarm, planner = franka
    task = generate_task("franka", 0, blocked_share=1.0)
    sarm.apply(task.scene)
    q0 = planner.start_configuration(np.array(task.scene.start))
    obstacle, arm = task.scene.obstacles[0], sarm.arm
    assert obstacle.top > sarm.layout.travel_z
    inside = solve_ik(arm, np.array([*obstacle.pos[:2], sarm.layout.travel_z]), q0, tol=1e-3, rest=np.array(sarm.layout.rest)).q
    depths = obstacle_contacts(sarm, inside)
    fromto = np.zeros(6)
    flange = min(mujoco.mj_geomDistance(arm.model, arm.data, sarm.obstacle_slots[0], g, 0.1, fromto)
                 for g in range(arm.model.ngeom) if arm.model.geom_bodyid[g] > 0 and arm.model.geom_contype[g])
    assert depths and min(depths) < 0 and flange < 0  # the contact list agrees with the exact distance query
    assert "obstacle0 touches panda_link" in (SafetyMonitor(arm).collision() or "")
    assert obstacle_contacts(sarm, q0) == [] and SafetyMonitor(arm).collision() is None


def test_blocked_task_has_a_plan_on_each_side(franka):
    _, planner = franka
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


def test_left_and_right_plans_are_contact_free_along_the_whole_path_and_their_average_is_not(franka):
    """Every link, every contact (obstacle, objects, table, self), at 10 joint-space points per waypoint
    step, by MuJoCo's own contact query on the simulated model (no planning margin): both expert
    plans are clear and pass on opposite sides, while their joint-space average (what a regression
    that averages the two modes would track) runs into the obstacle."""
    import mujoco

    sarm, planner = franka
    task = generate_task("franka", 0, blocked_share=1.0)
    _, plans = plan_task(planner, task)
    start, goal, obstacle = np.array(task.scene.start), task.grounding.goal, task.scene.obstacles[0]
    model, data = sarm.arm.model, sarm.arm.data

    def deepest(q):
        w = np.linspace(0, 1, 10, endpoint=False)[:, None, None]
        worst = np.inf
        for config in ((1 - w) * q[None, :-1] + w * q[None, 1:]).reshape(-1, q.shape[1]):
            data.qpos[: sarm.arm.nq] = config
            mujoco.mj_forward(model, data)
            worst = min([worst, *(c.dist for c in data.contact[: data.ncon])])
        return worst

    sides = [side_of(p.ee[:, :2], start, goal, obstacle)[0] for p in plans]
    assert sides == ["left", "right"]
    assert all(deepest(p.q) >= 0 for p in plans)
    n = min(len(p.q) for p in plans)
    assert min(obstacle_contacts(sarm, q) or [np.inf] for q in 0.5 * (plans[0].q[:n] + plans[1].q[:n])) < [0]


def test_expert_plan_tracked_by_the_pid_reaches_the_goal_without_safety_stop(franka):
    from labcli.sims.rollout import Execution, expert_actor, run_episodes

    sarm, planner = franka
    task = next(t for t in (generate_task("franka", s, blocked_share=1.0) for s in range(20)) if t.blocked)
    q0, plans = plan_task(planner, task)
    ex = Execution(policy_dt=0.2, horizon=8, execute=4, max_time=5.0)
    result = run_episodes([sarm.copy()], [task], [q0], [None], ex, expert_actor({id(task): plans[1].q}, ex))[0]
    assert result["success"] and not result["safety_stop"] and result["mode"] == "right"
    assert result["tracking_rms_rad"] < 5e-3 and result["final_distance_m"] < 0.01
