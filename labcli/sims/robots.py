"""Torque-controlled arm models built at load time from the shipped MJCF files with `mujoco.MjSpec`.

The shipped models are left untouched on disk. Here every joint gets a `motor` actuator whose
control range is the arm's real joint-torque limit, the Panda's `gravcomp` is dropped (gravity
must be fought by the controller, as on the real robot), the UR5e's position servos are removed,
and a floor is added so that collisions with the ground can be detected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mujoco  # MUJOCO_GL is set by labcli/sims/__init__.py
import numpy as np

ASSETS = Path(__file__).parent / "assets"


@dataclass(frozen=True)
class ArmSpec:
    """What the model file does not say: the datasheet limits and a sensible home pose."""

    name: str
    xml: Path
    ee_site: str
    base_body: str
    torque_limit: tuple[float, ...]  # N·m, per joint
    velocity_limit: tuple[float, ...]  # rad/s, per joint
    home: tuple[float, ...]  # rad
    workspace: tuple[tuple[float, float, float], tuple[float, float, float]]  # end-effector box (m)
    kp: tuple[float, ...]  # default PID gains (N·m/rad, N·m·s/rad, N·m/(rad·s))
    kd: tuple[float, ...]
    ki: tuple[float, ...]
    wave_joint: int  # joint swung by the `wave` task


ARMS: dict[str, ArmSpec] = {
    # Franka FCI datasheet: 87 N·m on joints 1-4, 12 N·m on 5-7; 2.175 / 2.61 rad/s.
    "franka": ArmSpec(
        name="franka",
        xml=ASSETS / "panda" / "panda.xml",
        ee_site="wrist_site",
        base_body="panda_link0",
        torque_limit=(87, 87, 87, 87, 12, 12, 12),
        velocity_limit=(2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61),
        home=(0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785),
        workspace=((-0.9, -0.9, 0.05), (0.9, 0.9, 1.3)),
        kp=(600, 600, 600, 600, 250, 150, 50),
        kd=(50, 50, 50, 50, 20, 20, 3),  # joint 7 has 5e-3 kg·m² and no rotor inertia in the model
        ki=(50, 50, 50, 50, 20, 20, 10),
        wave_joint=5,  # panda_joint6 flexes the wrist
    ),
    # UR5e: 150 N·m on the three large joints, 28 N·m on the wrists; 180 deg/s on every joint.
    "ur5": ArmSpec(
        name="ur5",
        xml=ASSETS / "ur5e" / "ur5e.xml",
        ee_site="attachment_site",
        base_body="base",
        torque_limit=(150, 150, 150, 28, 28, 28),
        velocity_limit=(3.14, 3.14, 3.14, 3.14, 3.14, 3.14),
        home=(-1.5708, -1.5708, 1.5708, -1.5708, -1.5708, 0.0),
        workspace=((-1.0, -1.0, 0.02), (1.0, 1.0, 1.2)),
        kp=(2000, 2000, 2000, 500, 500, 500),
        kd=(150, 150, 150, 40, 40, 40),
        ki=(200, 200, 200, 50, 50, 50),
        wave_joint=3,  # wrist_1 flexes the wrist
    ),
}


@dataclass
class Arm:
    """A compiled torque-controlled arm: model, data and the limits the controller must respect."""

    spec: ArmSpec
    model: mujoco.MjModel
    data: mujoco.MjData
    ee_site_id: int
    joint_names: list[str]
    q_min: np.ndarray
    q_max: np.ndarray
    tau_max: np.ndarray
    qd_max: np.ndarray
    home: np.ndarray
    floor_geom: int
    base_body_id: int
    nq: int = field(init=False)

    def __post_init__(self) -> None:
        self.nq = len(self.joint_names)

    def reset(self, q: np.ndarray | None = None) -> None:
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[: self.nq] = self.home if q is None else q
        mujoco.mj_forward(self.model, self.data)

    def ee_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.ee_site_id].copy()


def build_spec(name: str, timestep: float) -> tuple[mujoco.MjSpec, ArmSpec]:
    """The torque-controlled variant of arm `name` as an editable spec (scenes add geoms to it)."""
    arm = ARMS[name]
    spec = mujoco.MjSpec.from_file(str(arm.xml))
    for body in spec.bodies:
        body.gravcomp = 0.0
    for actuator in list(spec.actuators):
        spec.delete(actuator)
    for key in list(spec.keys):
        spec.delete(key)  # keyframes carry ctrl for the old actuators
    joints = [j for j in spec.joints]
    if len(joints) != len(arm.torque_limit):
        raise RuntimeError(f"{arm.xml} has {len(joints)} joints, expected {len(arm.torque_limit)}")
    for joint, limit in zip(joints, arm.torque_limit):
        motor = spec.add_actuator(name=f"motor_{joint.name}", target=joint.name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        motor.set_to_motor()
        motor.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        motor.ctrlrange = [-limit, limit]
    spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2, 2, 0.05], rgba=[0.3, 0.35, 0.4, 1])
    spec.worldbody.add_light(name="top", pos=[0, 0, 3], dir=[0, 0, -1])
    spec.add_exclude(bodyname1="world", bodyname2=arm.base_body)
    spec.option.timestep = timestep
    return spec, arm


def build_model(name: str, timestep: float) -> tuple[mujoco.MjModel, ArmSpec]:
    """Compile the torque-controlled variant of arm `name` with the given physics timestep."""
    spec, arm = build_spec(name, timestep)
    return spec.compile(), arm


def load_arm(name: str, timestep: float = 0.001) -> Arm:
    model, arm = build_model(name, timestep)
    return arm_from_model(model, arm)


def arm_from_model(model: mujoco.MjModel, arm: ArmSpec) -> Arm:
    """Wrap a compiled arm model (plain, or with a scene added) with its limits, at the home pose."""
    data = mujoco.MjData(model)
    joint_names = [model.joint(i).name for i in range(model.njnt)]
    result = Arm(
        spec=arm,
        model=model,
        data=data,
        ee_site_id=model.site(arm.ee_site).id,
        joint_names=joint_names,
        q_min=model.jnt_range[:, 0].copy(),
        q_max=model.jnt_range[:, 1].copy(),
        tau_max=np.array(arm.torque_limit, dtype=float),
        qd_max=np.array(arm.velocity_limit, dtype=float),
        home=np.array(arm.home, dtype=float),
        floor_geom=model.geom("floor").id,
        base_body_id=model.body(arm.base_body).id,
    )
    result.reset()
    return result


def preload_triton() -> None:
    """Import Triton (when installed) before the first EGL context. Triton bundles its own LLVM; when
    Mesa's software renderer (llvmpipe, which links another LLVM) is loaded first, a later
    `import triton` (torch._dynamo does it, and diffusers imports torch._dynamo) segfaults."""
    try:
        import triton
    except Exception:  # not installed, or no usable backend: nothing to clash with
        pass


def mass_matrix(model: mujoco.MjModel, data: mujoco.MjData, out: np.ndarray) -> np.ndarray:
    """Dense joint-space inertia M(q) (MuJoCo 4 has no `MjData.qM`; `mj_fullM` reads the sparse form)."""
    mujoco.mj_fullM(model, data, out)
    return out
