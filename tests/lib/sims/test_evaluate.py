"""Rows of the DiT table: which thing each collision e-stop was with."""

from __future__ import annotations

from labcli.sims.evaluate import collision_partners


def test_collision_partners_name_the_scene_part_or_self():
    reasons = ["collision: obstacle0 touches panda_link5 (depth 3.1 mm)", "collision: panda_link7 touches obstacle0 (depth 0.2 mm)",
               "collision: table touches panda_link7 (depth 1.0 mm)", "collision: object3 touches panda_link7 (depth 1.0 mm)",
               "collision: upper_arm_link touches wrist_3_link (depth 0.1 mm)", "joint_velocity: panda_joint3 at 2.9 rad/s", None]
    assert collision_partners([{"estop_reason": r} for r in reasons]) == {"obstacle": 2, "table": 1, "object": 1, "self": 1}
