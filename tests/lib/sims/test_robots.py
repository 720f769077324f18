"""The arm models: torque-controlled motors, the real torque limits, no gravity compensation."""

from __future__ import annotations

import numpy as np
import pytest

from labcli.sims.robots import load_arm

DT = 0.001


@pytest.mark.parametrize("robot", ["franka", "ur5"])
def test_models_are_torque_controlled_without_gravcomp(robot):
    arm = load_arm(robot, DT)
    assert arm.model.nu == arm.nq
    assert np.allclose(arm.model.actuator_ctrlrange[:, 1], arm.tau_max)
    assert np.all(arm.model.actuator_gainprm[:, 0] == 1.0) and np.all(arm.model.actuator_biastype == 0)  # motor
    assert arm.model.body_gravcomp.sum() == 0.0
    expected = [87, 87, 87, 87, 12, 12, 12] if robot == "franka" else [150, 150, 150, 28, 28, 28]
    assert arm.tau_max.tolist() == expected

