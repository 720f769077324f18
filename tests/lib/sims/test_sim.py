"""Closed-loop simulation: holding under gravity, step response, e-stops."""

from __future__ import annotations

import numpy as np
import pytest

from labcli.errors import UserError
from labcli.sims.robots import load_arm
from labcli.sims.safety import SafetyMonitor
from labcli.sims.sim import Reference, make_controller, plan_segments, simulate
from labcli.sims.tasks import parse_task

DT = 0.001


def hold(robot: str, feedforward: bool, kind: str = "pid", ki_scale: float = 1.0, seconds: float = 2.0):
    """Start 0.02 rad away from home on every joint and hold home under gravity."""
    arm = load_arm(robot, DT)
    spec = arm.spec
    start = arm.home + 0.02
    arm.reset(start)
    reference = Reference(start, [], "step")
    reference.final = arm.home.copy()  # no segments: hold the home pose from t=0
    ctrl = make_controller(arm, kind, DT, spec.kp, [k * ki_scale for k in spec.ki], spec.kd, 50.0, feedforward)
    return arm, simulate(arm, reference, ctrl, SafetyMonitor(arm), DT, seconds)


@pytest.mark.parametrize("robot", ["franka", "ur5"])
def test_pid_with_gravity_feedforward_holds_pose_within_1e_3(robot):
    arm, result = hold(robot, feedforward=True)
    assert result.estop_reason is None
    assert np.abs(result.error[-1]).max() < 1e-3
    assert np.all(np.abs(result.tau) <= arm.tau_max + 1e-9)


@pytest.mark.parametrize("robot", ["franka", "ur5"])
def test_without_feedforward_or_integral_gravity_pulls_the_arm_off(robot):
    _, result = hold(robot, feedforward=False, ki_scale=0.0)
    assert np.abs(result.error[-1]).max() > 1e-3


@pytest.mark.parametrize("robot", ["franka", "ur5"])
def test_computed_torque_holds_pose(robot):
    _, result = hold(robot, feedforward=True, kind="computed_torque")
    assert result.estop_reason is None
    assert np.abs(result.error[-1]).max() < 1e-3


@pytest.mark.parametrize("robot,task", [("franka", "joint 1 0.8"), ("ur5", "joint 1 -1.0")])
def test_step_response_stays_within_torque_limits(robot, task):
    arm = load_arm(robot, DT)
    segments = plan_segments(arm, parse_task(task, arm.nq), arm.home, 0.5)
    reference = Reference(arm.home, segments, "step")
    safety = SafetyMonitor(arm, velocity_margin=10.0)  # a raw step is fast by design; check torques only
    ctrl = make_controller(arm, "pid", DT, arm.spec.kp, arm.spec.ki, arm.spec.kd, 50.0, True)
    result = simulate(arm, reference, ctrl, safety, DT, 1.5)
    assert result.estop_reason is None
    assert np.all(np.abs(result.tau) <= arm.tau_max + 1e-9)
    assert np.all(np.abs(arm.data.actuator_force) <= arm.tau_max + 1e-9)
    assert result.saturated.any(), "a raw step should hit the torque limit"
    assert any(e["kind"] == "torque_saturation" for e in result.events)


def test_target_beyond_joint_limit_trips_estop_with_reason():
    arm = load_arm("franka", DT)
    segments = plan_segments(arm, parse_task("joint 4 0.5", arm.nq), arm.home, 0.5)  # range is [-3.07, -0.07]
    reference = Reference(arm.home, segments)
    ctrl = make_controller(arm, "pid", DT, arm.spec.kp, arm.spec.ki, arm.spec.kd, 50.0, True)
    result = simulate(arm, reference, ctrl, SafetyMonitor(arm), DT, reference.end + 1.0, brake_time=0.3)
    assert result.estop_reason.startswith("joint_position: panda_joint4")
    assert [e["kind"] for e in result.events if e["estop"]] == ["joint_position"]
    assert result.t[-1] <= result.estop_time + 0.3 + DT  # braked, then stopped
    assert np.abs(result.qd[-1]).max() < np.abs(result.qd).max()  # the brake slowed the arm


def test_workspace_box_trips_estop():
    arm = load_arm("ur5", DT)
    q0 = arm.home
    safety = SafetyMonitor(arm, workspace_max=np.array([1.0, 1.0, 0.3]))  # home end effector is at z=0.49
    ctrl = make_controller(arm, "pid", DT, arm.spec.kp, arm.spec.ki, arm.spec.kd, 50.0, True)
    result = simulate(arm, Reference(q0, []), ctrl, safety, DT, 0.1, brake_time=0.01)
    assert result.estop_reason.startswith("workspace:")


def test_unreachable_target_is_a_user_error():
    arm = load_arm("ur5", DT)
    with pytest.raises(UserError, match="out of reach"):
        plan_segments(arm, parse_task("reach 3 0 0", arm.nq), arm.home, 0.5)

