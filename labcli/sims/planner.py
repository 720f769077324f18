"""The expert: IK along a Cartesian path that goes around obstacles on either side, as joint waypoints.

For a start configuration and a goal, the end effector's path in the horizontal plane is a straight
line when no obstacle is near it, and otherwise a quadratic Bézier through a via point beside the
obstacle: on its left or its right as seen along the direction of travel, both valid, which is
what makes the demonstrations multimodal. The path is timed with a minimum-jerk profile at a peak
end-effector speed, sampled every `dt`, solved by warm-started damped-least-squares IK, and
checked kinematically: at every waypoint and `substeps - 1` joint-space points between each two, no
link of the arm may come within `margin` of the table, an object or the obstacle, nor touch another
link (MuJoCo's contact query); every waypoint within the joint limits and under a share of the
velocity limits. The torque controller then tracks the joint waypoints.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import mujoco
import numpy as np

from labcli.sims.control import solve_ik
from labcli.sims.scene import SceneArm, Thing

SIDES = ("left", "right")


class PlanError(Exception):
    """No collision-free, reachable path for this side (the message says why)."""


@dataclass
class Plan:
    q: np.ndarray  # (K, nq) joint waypoints every dt, from the start configuration to the end of the hold
    ee: np.ndarray  # (K, 3) end-effector positions of the waypoints
    dt: float
    mode: str  # direct | left | right
    motion_steps: int  # waypoints until the goal is reached (the rest hold it)


def obstacle_extent(thing: Thing, direction: np.ndarray) -> float:
    """Half-width of the obstacle's footprint along a unit xy direction (support function)."""
    if thing.kind == "wall":
        c, s = np.cos(thing.yaw), np.sin(thing.yaw)
        return float(abs(direction @ np.array([c, s])) * thing.size[0] + abs(direction @ np.array([-s, c])) * thing.size[1])
    return float(thing.size[0])


def distance_to_obstacle(points: np.ndarray, thing: Thing) -> np.ndarray:
    """Horizontal distance from xy points (N, 2) to the obstacle's footprint (0 inside)."""
    rel = points - np.array(thing.pos[:2])
    if thing.kind == "wall":
        c, s = np.cos(thing.yaw), np.sin(thing.yaw)
        local = np.abs(rel @ np.array([[c, -s], [s, c]]))  # coordinates along and across the wall
        outside = np.maximum(local - np.array(thing.size[:2]), 0.0)
        return np.linalg.norm(outside, axis=1)
    return np.maximum(np.linalg.norm(rel, axis=1) - thing.size[0], 0.0)


def side_of(path_xy: np.ndarray, start: np.ndarray, goal: np.ndarray, thing: Thing) -> tuple[str, float]:
    """Which side of `thing` a path passes, looking from start to goal, and its signed offset (m, + left).

    Measured where the path crosses the obstacle's projection on the start-goal line; 'none' when it
    never gets there (it stopped before)."""
    axis = goal[:2] - start[:2]
    axis = axis / max(np.linalg.norm(axis), 1e-9)
    normal = np.array([-axis[1], axis[0]])
    centre = np.array(thing.pos[:2])
    along = (path_xy - start[:2]) @ axis - (centre - start[:2]) @ axis
    crossing = np.flatnonzero((along[:-1] <= 0) & (along[1:] > 0))
    if crossing.size == 0:
        return "none", 0.0
    k = crossing[0]
    w = -along[k] / max(along[k + 1] - along[k], 1e-12)
    point = path_xy[k] + w * (path_xy[k + 1] - path_xy[k])
    offset = float((point - centre) @ normal)
    return ("left" if offset > 0 else "right"), offset


class Planner:
    """Plans expert paths in one SceneArm's current scene (a private model copy with clearance margins)."""

    def __init__(self, sarm: SceneArm, dt: float = 0.1, speed: float = 0.3, hold: float = 1.0,
                 clearance: float = 0.12, margin: float = 0.01, max_joint_speed: float = 0.6, substeps: int = 4):
        self.sarm, self.dt, self.speed, self.hold, self.substeps = sarm, dt, speed, hold, substeps
        self.clearance, self.max_joint_speed = clearance, max_joint_speed
        # a copy whose scene geoms report contacts `margin` early: waypoints keep that much clearance
        self.model = copy.deepcopy(sarm.arm.model)
        self.margin = margin
        self.scratch = mujoco.MjData(self.model)
        self.ik_data = mujoco.MjData(sarm.arm.model)
        self.arm = sarm.arm
        self.rest = np.array(sarm.layout.rest)
        self._scene = None

    def sync(self) -> None:
        """Copy the SceneArm's current scene into the planning model."""
        src, dst = self.sarm.arm.model, self.model
        for name in ("geom_type", "geom_size", "geom_pos", "geom_quat", "geom_contype", "geom_conaffinity", "geom_rbound", "geom_aabb"):
            getattr(dst, name)[:] = getattr(src, name)
        scene_geoms = list(self.sarm.object_slots) + list(self.sarm.obstacle_slots) + [src.geom("table").id]
        dst.geom_margin[scene_geoms] = self.margin
        self._scene = self.sarm.scene

    def start_configuration(self, point: np.ndarray, seed_q: np.ndarray | None = None) -> np.ndarray:
        ik = solve_ik(self.arm, point, self.rest if seed_q is None else seed_q, tol=1e-3, scratch=self.ik_data, rest=self.rest)
        if ik.error > 3e-3:
            raise PlanError(f"start {np.round(point, 3).tolist()} is out of reach ({ik.error * 100:.1f} cm)")
        return ik.q

    def blocking(self, start: np.ndarray, goal: np.ndarray) -> list[Thing]:
        """Obstacles closer than `clearance` to the straight start-goal path."""
        line = start[None, :2] + np.linspace(0, 1, 41)[:, None] * (goal[:2] - start[:2])[None, :]
        return [o for o in self.sarm.scene.obstacles if distance_to_obstacle(line, o).min() < self.clearance]

    def path(self, start: np.ndarray, goal: np.ndarray, mode: str, obstacle: Thing | None) -> np.ndarray:
        """End-effector positions every dt along the (straight or detour) path, minimum-jerk timed."""
        if mode == "direct":
            control = (start + goal) / 2
        else:
            axis = goal[:2] - start[:2]
            axis /= np.linalg.norm(axis)
            normal = np.array([-axis[1], axis[0]]) * (1.0 if mode == "left" else -1.0)
            centre = np.array(obstacle.pos[:2])
            foot = start[:2] + ((centre - start[:2]) @ axis) * axis  # obstacle centre projected on the line
            offset = (centre - foot) @ normal + obstacle_extent(obstacle, normal) + self.clearance
            via = np.append(foot + offset * normal, (start[2] + goal[2]) / 2)
            control = 2 * via - (start + goal) / 2  # the Bézier passes through `via` at its middle
        fine = np.linspace(0, 1, 201)[:, None]
        curve = (1 - fine) ** 2 * start + 2 * fine * (1 - fine) * control + fine**2 * goal
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
        length = arc[-1]
        duration = max(1.0, 1.875 * length / self.speed)  # minimum jerk peaks at 1.875 x the mean speed
        steps = int(np.ceil(duration / self.dt))
        tau = np.arange(steps + 1) * self.dt / (steps * self.dt)
        s = 10 * tau**3 - 15 * tau**4 + 6 * tau**5
        return np.stack([np.interp(s * length, arc, curve[:, i]) for i in range(3)], axis=1)

    def plan(self, q_start: np.ndarray, goal: np.ndarray, mode: str | None = None, rng: np.random.Generator | None = None) -> Plan:
        """A plan from q_start to goal: 'direct' when nothing is in the way, else `mode` (left/right, or
        a random side that works when None). Raises PlanError when no side works."""
        if self._scene is not self.sarm.scene:
            self.sync()
        start = self.ee(q_start)
        blockers = self.blocking(start, goal)
        if not blockers:
            return self.solve(q_start, goal, self.path(start, goal, "direct", None), "direct")
        if len(blockers) > 1:
            raise PlanError("more than one obstacle in the way")
        sides = [mode] if mode else list(rng.permutation(SIDES) if rng is not None else SIDES)
        errors = []
        for side in sides:
            try:
                return self.solve(q_start, goal, self.path(start, goal, side, blockers[0]), side)
            except PlanError as exc:
                errors.append(f"{side}: {exc}")
        raise PlanError("; ".join(errors))

    def solve(self, q_start: np.ndarray, goal: np.ndarray, points: np.ndarray, mode: str) -> Plan:
        arm = self.arm
        qs = [q_start]
        for point in points[1:]:
            ik = solve_ik(arm, point, qs[-1], tol=1e-3, max_iters=60, scratch=self.ik_data, rest=self.rest)
            if ik.error > 3e-3:
                raise PlanError(f"IK stops {ik.error * 100:.1f} cm from {np.round(point, 3).tolist()}")
            qs.append(ik.q)
        q = np.array(qs)
        speed = np.abs(np.diff(q, axis=0)) / self.dt
        if (speed > self.max_joint_speed * arm.qd_max).any():
            j = int(np.argmax((speed / arm.qd_max).max(axis=0)))
            raise PlanError(f"{arm.joint_names[j]} would move at {speed[:, j].max():.2f} rad/s")
        if (q < arm.q_min + 0.05).any() or (q > arm.q_max - 0.05).any():
            raise PlanError("a waypoint is within 0.05 rad of a joint limit")
        hit = self.path_contact(q)
        if hit:
            raise PlanError(hit)
        hold = np.repeat(q[-1:], int(round(self.hold / self.dt)), axis=0)
        full = np.concatenate([q, hold])
        return Plan(full, np.concatenate([points, np.repeat(points[-1:], len(hold), axis=0)]), self.dt, mode, len(q))

    def path_contact(self, q: np.ndarray) -> str | None:
        """The first contact of the whole arm (every link, within the margin) along the joint path `q` (K, nq),
        checked at the waypoints and `substeps - 1` joint-space interpolations between each two."""
        w = np.arange(self.substeps)[:, None, None] / self.substeps
        configs = ((1 - w) * q[None, :-1] + w * q[None, 1:]).transpose(1, 0, 2).reshape(-1, q.shape[1])
        for config in np.concatenate([configs, q[-1:]]):
            hit = self.contact(config)
            if hit:
                return hit
        return None

    def contact(self, q: np.ndarray) -> str | None:
        """The first contact (within the clearance margin) of the arm at configuration q, or None."""
        data, model = self.scratch, self.model
        data.qpos[: self.arm.nq] = q
        mujoco.mj_kinematics(model, data)
        mujoco.mj_collision(model, data)
        for c in data.contact[: data.ncon]:
            if c.dist < 0 or model.geom_margin[c.geom1] > 0 or model.geom_margin[c.geom2] > 0:
                g1, g2 = model.geom(c.geom1).name or model.body(model.geom_bodyid[c.geom1]).name, model.geom(c.geom2).name or model.body(model.geom_bodyid[c.geom2]).name
                return f"{g1} within {self.margin * 100:.0f} cm of {g2}"
        return None

    def ee(self, q: np.ndarray) -> np.ndarray:
        data = self.ik_data
        data.qpos[: self.arm.nq] = q
        mujoco.mj_kinematics(self.arm.model, data)
        return data.site_xpos[self.arm.ee_site_id].copy()
