"""Receding-horizon execution in MuJoCo: a policy's chunk of joint waypoints -> PID torques -> physics.

Every `policy_dt` x `execute` seconds the policy sees the measured joint angles and the task and
returns H joint waypoints; the first `execute` of them, joined to the current reference by cubic
Hermite interpolation (velocity-continuous across replans), are tracked at the control rate by
the arm's joint PID with gravity feed-forward under its torque limits, while the safety monitor
checks joint limits, speeds, the workspace and every contact. An e-stop ends the episode after
braking. Many episodes (one SceneArm copy each) advance in lockstep so a learned policy is
queried once per replan for all of them.

Per episode: success (no e-stop and the end effector within `goal_tolerance` of the goal at the
end; an episode ends early once the end effector is at the goal at two replans in a row),
collision (an e-stop on contact), any safety stop, RMS joint tracking error (q_ref - q),
time to reach the goal, and for blocked tasks the side the end effector passed the obstacle on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import mujoco
import numpy as np

from labcli.sims.control import JointPID, central_tangents
from labcli.sims.demos import Task
from labcli.sims.planner import side_of
from labcli.sims.safety import SafetyMonitor
from labcli.sims.scene import SceneArm
from labcli.sims.sim import WaypointReference, simulate

TRACE_EVERY = 10  # control steps between recorded joint angles (10 ms at 1 kHz)


@dataclass(frozen=True)
class Execution:
    dt: float = 0.001  # control and physics period (s)
    policy_dt: float = 0.1  # seconds between waypoints
    horizon: int = 16  # waypoints per chunk
    execute: int = 8  # waypoints executed before replanning
    max_time: float = 6.0  # episode length (s)
    goal_tolerance: float = 0.03  # m
    brake_time: float = 0.3  # s simulated after an e-stop


class Episode:
    def __init__(self, sarm: SceneArm, task: Task, q0: np.ndarray, ex: Execution, image: np.ndarray | None = None):
        sarm.apply(task.scene)
        self.sarm, self.task, self.ex, self.image = sarm, task, ex, image
        arm = self.arm = sarm.arm
        arm.reset(q0)
        self.controller = JointPID(arm.spec.kp, arm.spec.ki, sarm.layout.kd or arm.spec.kd, arm.tau_max, ex.dt)
        self.safety = SafetyMonitor(arm)
        self.t, self.q0 = 0.0, q0.copy()
        self.q_ref, self.v_ref = q0.copy(), np.zeros(arm.nq)
        self.trace = [q0.copy()]
        self.sq_error, self.n_error = 0.0, 0
        self.settled = 0  # consecutive replans that ended at the goal
        self.done = False
        self.on_frame, self.frame_every = None, 0  # optional video capture, every N control steps

    def joint_angles(self) -> np.ndarray:
        return self.arm.data.qpos[: self.arm.nq].copy()

    def advance(self, chunk: np.ndarray) -> None:
        """Track the first `execute` waypoints of `chunk` (H, nq), then stop on an e-stop or at max_time."""
        ex = self.ex
        knots = np.vstack([self.q_ref, chunk])
        tangents = central_tangents(knots, ex.policy_dt, v_first=self.v_ref)
        n = min(ex.execute, len(chunk))
        reference = WaypointReference(knots[: n + 1], tangents[: n + 1], ex.policy_dt)
        result = simulate(self.arm, reference, self.controller, self.safety, ex.dt, n * ex.policy_dt,
                          brake_time=ex.brake_time, t0=self.t, on_frame=self.on_frame, frame_every=self.frame_every)
        error = result.error
        if self.safety.estop_time is not None:
            error = error[result.t < self.safety.estop_time]
        self.sq_error += float((error**2).sum())
        self.n_error += error.size
        self.trace.extend(result.q[TRACE_EVERY - 1 :: TRACE_EVERY])
        self.t += n * ex.policy_dt
        self.q_ref, self.v_ref = knots[n], tangents[n]
        at_goal = np.linalg.norm(self.arm.ee_pos() - self.task.grounding.goal) < ex.goal_tolerance
        self.settled = self.settled + 1 if at_goal else 0
        # two replans in a row at the goal: the rest of the episode would be holding there
        self.done = self.safety.tripped or self.t >= ex.max_time - 1e-9 or self.settled >= 2

    def finish(self) -> dict:
        trace = np.array(self.trace)
        ee = end_effector_path(self.arm, trace)
        goal = self.task.grounding.goal
        dist = np.linalg.norm(ee - goal, axis=1)
        reason = self.safety.estop_reason
        success = reason is None and dist[-1] < self.ex.goal_tolerance
        inside = np.flatnonzero(dist < self.ex.goal_tolerance)
        mode, offset = ("direct", 0.0)
        if self.task.blocked:
            mode, offset = side_of(ee[:, :2], np.array(self.task.scene.start), goal, self.task.scene.obstacles[0])
        step = TRACE_EVERY * self.ex.dt
        return {
            "success": bool(success), "collision": bool(reason and reason.startswith("collision")),
            "safety_stop": reason is not None, "estop_reason": reason,
            "tracking_rms_rad": float(np.sqrt(self.sq_error / max(self.n_error, 1))),
            "time_to_goal_s": float(inside[0] * step) if success and inside.size else None,
            "final_distance_m": float(dist[-1]), "blocked": self.task.blocked, "mode": mode, "offset_m": offset,
            "q_path": trace[:: int(round(self.ex.policy_dt / step))], "ee_path": ee,
        }


def end_effector_path(arm, q: np.ndarray) -> np.ndarray:
    data = mujoco.MjData(arm.model)
    out = np.zeros((len(q), 3))
    for i, config in enumerate(q):
        data.qpos[: arm.nq] = config
        mujoco.mj_kinematics(arm.model, data)
        out[i] = data.site_xpos[arm.ee_site_id]
    return out


def run_episodes(pool: list[SceneArm], tasks: list[Task], starts: list[np.ndarray], images: list, ex: Execution,
                 act: Callable[[list[Episode]], np.ndarray], progress: Callable[[int], None] | None = None) -> list[dict]:
    """Run every task once with `act(episodes) -> (len, H, nq)` waypoints; len(pool) episodes at a time."""
    results: list[dict] = []
    for first in range(0, len(tasks), len(pool)):
        batch = [Episode(pool[j], tasks[first + j], starts[first + j], ex, images[first + j])
                 for j in range(min(len(pool), len(tasks) - first))]
        while True:
            active = [e for e in batch if not e.done]
            if not active:
                break
            for episode, chunk in zip(active, act(active)):
                episode.advance(chunk)
        results.extend(e.finish() for e in batch)
        if progress is not None:
            progress(len(results))
    return results


def expert_actor(plans: dict[int, np.ndarray], ex: Execution) -> Callable[[list[Episode]], np.ndarray]:
    """The expert as a policy: the next H waypoints of its plan (keyed by id(task))."""

    def act(episodes: list[Episode]) -> np.ndarray:
        out = []
        for e in episodes:
            q = plans[id(e.task)]
            k = int(round(e.t / ex.policy_dt))
            idx = np.minimum(np.arange(k + 1, k + 1 + ex.horizon), len(q) - 1)
            out.append(q[idx])
        return np.array(out)

    return act
