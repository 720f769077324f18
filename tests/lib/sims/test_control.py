"""Damped-least-squares IK and minimum-jerk trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from labcli.sims.control import quintic, solve_ik
from labcli.sims.robots import load_arm
from labcli.sims.sim import ee_at

DT = 0.001


@pytest.mark.parametrize("robot", ["franka", "ur5"])
def test_dls_ik_reaches_target(robot):
    arm = load_arm(robot, DT)
    target = np.array([0.4, 0.2, 0.45])
    ik = solve_ik(arm, target, arm.home)
    assert ik.converged
    assert np.linalg.norm(ee_at(arm, ik.q) - target) < 1e-3
    assert np.all(ik.q >= arm.q_min) and np.all(ik.q <= arm.q_max)


def test_quintic_is_minimum_jerk_with_rest_to_rest_ends():
    q0, q1 = np.array([0.0, 1.0]), np.array([1.0, -1.0])
    q, qd, qdd = quintic(q0, q1, 2.0, np.array([0.0, 1.0, 2.0]))
    assert np.allclose(q[0], q0) and np.allclose(q[2], q1) and np.allclose(q[1], (q0 + q1) / 2)
    assert np.allclose(qd[[0, 2]], 0) and np.allclose(qdd[[0, 2]], 0)
    assert np.allclose(qd[1], 1.875 * (q1 - q0) / 2.0)  # peak velocity of a minimum-jerk move

