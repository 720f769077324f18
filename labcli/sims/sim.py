"""The torque loop: plan -> joint trajectory -> controller -> safety -> MuJoCo, at a fixed control rate.

`plan_segments` turns parsed task steps into joint-space waypoints (IK for Cartesian targets);
`simulate` runs the loop and returns every step's t, q, q_ref, q̇, τ plus the safety events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import mujoco
import numpy as np

from labcli.errors import UserError
from labcli.sims.control import (
    ComputedTorque,
    JointPID,
    central_tangents,
    hermite,
    quintic,
    quintic_duration,
    solve_ik,
)
from labcli.sims.robots import Arm
from labcli.sims.safety import SafetyMonitor
from labcli.sims.tasks import Step

WAVE_AMPLITUDE = 0.5  # rad each side of the wrist's current angle


@dataclass
class Segment:
    """Go from the previous target to `q_goal` in `duration` seconds (a step when interpolation is off);
    with `path` (waypoints evenly spaced over the duration, from the previous target to q_goal), follow it."""

    q_goal: np.ndarray
    duration: float
    label: str
    path: np.ndarray | None = None


def plan_segments(arm: Arm, steps: list[Step], q_start: np.ndarray, speed: float, planner=None) -> list[Segment]:
    """Resolve each task step into joint-space segments, chained from `q_start`; `goal` steps (grounded
    instructions) need the scene's `planner` (labcli.sims.planner.Planner)."""
    segments: list[Segment] = []
    q = q_start.copy()

    def go(goal: np.ndarray, label: str) -> None:
        nonlocal q
        segments.append(Segment(goal, quintic_duration(q, goal, arm.qd_max, speed), label))
        q = goal

    for step in steps:
        if step.kind == "home":
            go(arm.home.copy(), step.text)
        elif step.kind == "move":
            go(np.array(step.args), step.text)
        elif step.kind == "joint":
            goal = q.copy()
            goal[int(step.args[0]) - 1] = step.args[1]
            go(goal, step.text)
        elif step.kind == "reach":
            target = np.array(step.args)
            ik = solve_ik(arm, target, q)
            if not ik.converged:
                raise UserError(f"'{step.text}' is out of reach of the {arm.spec.name} (IK stops {ik.error * 100:.1f} cm away)",
                                "pick a point closer to the base; the home end-effector position is "
                                f"{np.round(ee_at(arm, arm.home), 3).tolist()} m")
            go(ik.q, step.text)
        elif step.kind == "wave":
            j = arm.spec.wave_joint
            centre = q.copy()
            for _ in range(int(step.args[0]) if step.args else 2):
                for sign in (1, -1):
                    goal = centre.copy()
                    goal[j] = np.clip(centre[j] + sign * WAVE_AMPLITUDE, arm.q_min[j] + 0.05, arm.q_max[j] - 0.05)
                    go(goal, step.text)
            go(centre, step.text)
        elif step.kind == "hold":
            segments.append(Segment(q.copy(), float(step.args[0]), step.text))
        elif step.kind == "goal":
            from labcli.sims.planner import PlanError

            try:
                plan = planner.plan(q, np.array(step.args), None, np.random.default_rng(0))
            except PlanError as exc:
                raise UserError(f"'{step.text}': the expert finds no path ({exc})", "pick another object or relation, or another --scene") from None
            path = plan.q[: plan.motion_steps]
            segments.append(Segment(path[-1].copy(), plan.dt * (len(path) - 1), f"{step.text} ({plan.mode})", path))
            q = path[-1].copy()
    return segments


def ee_at(arm: Arm, q: np.ndarray) -> np.ndarray:
    scratch = mujoco.MjData(arm.model)
    scratch.qpos[: arm.nq] = q
    mujoco.mj_kinematics(arm.model, scratch)
    return scratch.site_xpos[arm.ee_site_id].copy()


@dataclass
class Reference:
    """Piecewise reference q_ref(t), q̇_ref(t), q̈_ref(t) over the segments, then hold the last goal."""

    q_start: np.ndarray
    segments: list[Segment]
    interpolation: str = "quintic"
    starts: list[float] = field(init=False)
    sources: list[np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.starts, self.sources, t, q = [], [], 0.0, self.q_start
        for seg in self.segments:
            self.starts.append(t)
            self.sources.append(q)
            t += seg.duration
            q = seg.q_goal
        self.end = t
        self.final = q

    def sample(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """q_ref, q̇_ref, q̈_ref and the segment index at every time, computed once before the loop."""
        n = len(self.final)
        q, qd, qdd = np.tile(self.final, (len(times), 1)), np.zeros((len(times), n)), np.zeros((len(times), n))
        index = np.full(len(times), len(self.segments), dtype=np.int32)
        for i, seg in enumerate(self.segments):
            t0 = self.starts[i]
            rows = (times >= t0) & (times < t0 + seg.duration)
            index[rows] = i
            if seg.path is not None:
                step = seg.duration / (len(seg.path) - 1)
                q[rows], qd[rows], qdd[rows] = hermite(seg.path, central_tangents(seg.path, step), step, times[rows] - t0)
                continue
            if self.interpolation == "step":
                q[rows] = seg.q_goal
                continue
            q[rows], qd[rows], qdd[rows] = quintic(self.sources[i], seg.q_goal, seg.duration, times[rows] - t0)
        return q, qd, qdd, index


@dataclass
class WaypointReference:
    """q_ref(t) through joint waypoints `knots` (K+1, n) spaced `dt` apart (cubic Hermite), then hold the last.

    The same `sample` interface as `Reference`, for an expert's dense path or a policy's action chunk.
    """

    knots: np.ndarray
    tangents: np.ndarray
    dt: float

    def __post_init__(self) -> None:
        self.end = self.dt * (len(self.knots) - 1)
        self.final = self.knots[-1]
        self.segments: list[Segment] = []

    def sample(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        q, qd, qdd = hermite(self.knots, self.tangents, self.dt, times)
        after = np.asarray(times) > self.end
        qd[after], qdd[after] = 0.0, 0.0
        return q, qd, qdd, np.zeros(len(times), dtype=np.int32)


@dataclass
class SimResult:
    t: np.ndarray
    q: np.ndarray
    q_ref: np.ndarray
    qd: np.ndarray
    tau: np.ndarray
    saturated: np.ndarray
    segment: np.ndarray
    events: list
    estop_reason: str | None
    estop_time: float | None
    wall_s: float
    frames: list = field(default_factory=list)

    @property
    def error(self) -> np.ndarray:
        return self.q_ref - self.q


def make_controller(arm: Arm, kind: str, dt: float, kp, ki, kd, wn: float, feedforward: bool):
    if kind == "computed_torque":
        return ComputedTorque(arm, wn, arm.tau_max, dt)
    return JointPID(kp, ki, kd, arm.tau_max, dt, feedforward=feedforward)


def simulate(arm: Arm, reference: Reference, controller, safety: SafetyMonitor, dt: float, duration: float,
             max_steps: int = 0, brake_time: float = 0.5, brake_damping: float | None = None,
             on_frame: Callable[[float], None] | None = None, frame_every: int = 0,
             progress: Callable[[int], None] | None = None, t0: float = 0.0) -> SimResult:
    """Run the control loop for `duration` seconds (or `max_steps` steps) at period dt.

    Each cycle: mj_step1 (kinematics, bias forces, contacts for the current state), controller,
    safety checks, mj_step2 (integrate). After an e-stop the arm brakes: τ = -D q̇ + bias, saturated.
    `t0`: the simulated time at the first step, when a run is simulated in pieces (receding horizon);
    the reference is sampled from its own t = 0.
    """
    model, data, n = arm.model, arm.data, arm.nq
    total = int(round(duration / dt))
    if max_steps:
        total = min(total, max_steps)
    rec = {k: np.zeros((total, n)) for k in ("q", "qd", "tau")}
    saturated = np.zeros((total, n), dtype=bool)
    times = np.arange(total) * dt
    q_refs, qd_refs, qdd_refs, segment = reference.sample(times)
    brake_d = np.asarray(brake_damping if brake_damping is not None else 2.0 * np.sqrt(arm.tau_max), dtype=float)
    stop_at = None
    done = total
    render_s = 0.0  # excluded from the wall time, so the real-time factor measures the control loop
    start = time.perf_counter()
    for k in range(total):
        t = t0 + k * dt
        mujoco.mj_step1(model, data)
        q, qd = data.qpos[:n].copy(), data.qvel[:n].copy()
        bias = data.qfrc_bias[:n]
        q_ref, qd_ref, qdd_ref = q_refs[k], qd_refs[k], qdd_refs[k]
        if safety.tripped:
            raw = -brake_d * qd + bias
            tau = np.clip(raw, -arm.tau_max, arm.tau_max)
            sat = tau != raw
        else:
            tau = controller(q, qd, q_ref, qd_ref, qdd_ref, bias)
            sat = controller.saturated
        data.ctrl[:n] = tau
        if safety.check(t, q, qd, sat):
            stop_at = t + brake_time
        rec["q"][k], rec["qd"][k], rec["tau"][k] = q, qd, tau
        saturated[k] = sat
        mujoco.mj_step2(model, data)
        if on_frame is not None and frame_every and k % frame_every == 0:
            before = time.perf_counter()
            on_frame(t)
            render_s += time.perf_counter() - before
        if progress is not None and k % 500 == 0:
            progress(k)
        if stop_at is not None and t >= stop_at:
            done = k + 1
            break
    wall = time.perf_counter() - start - render_s
    cut = slice(0, done)
    return SimResult(t0 + times[cut], rec["q"][cut], q_refs[cut], rec["qd"][cut], rec["tau"][cut], saturated[cut],
                     segment[cut], [e.as_dict() for e in safety.events], safety.estop_reason, safety.estop_time, wall)


def metrics(result: SimResult, reference: Reference, joint_names: list[str], tau_max: np.ndarray, dt: float,
            settle_tol: float = 1e-3) -> dict:
    """Tracking quality per joint and overall: RMS / max error, settling time, overshoot, saturation."""
    err = result.error
    n = err.shape[1]
    rms = np.sqrt(np.mean(err**2, axis=0)) if len(err) else np.zeros(n)
    peak = np.max(np.abs(err), axis=0) if len(err) else np.zeros(n)
    settling = settling_time(result, reference, settle_tol)
    overshoot = overshoot_pct(result, reference)
    sim_time = len(result.t) * dt
    return {
        "joints": [
            {"joint": name, "rms_error_rad": float(rms[j]), "max_error_rad": float(peak[j]),
             "overshoot_pct": float(overshoot[j]), "saturated_share": float(result.saturated[:, j].mean()) if len(err) else 0.0,
             "max_abs_torque_nm": float(np.abs(result.tau[:, j]).max()) if len(err) else 0.0, "torque_limit_nm": float(tau_max[j])}
            for j, name in enumerate(joint_names)
        ],
        "rms_error_rad": float(np.sqrt(np.mean(err**2))) if len(err) else 0.0,
        "max_error_rad": float(peak.max()),
        "final_error_rad": float(np.abs(err[-1]).max()) if len(err) else 0.0,
        "settling_time_s": settling,
        "max_overshoot_pct": float(overshoot.max()),
        "saturated_share": float(result.saturated.mean()) if len(err) else 0.0,
        "sim_time_s": sim_time,
        "wall_time_s": result.wall_s,
        "real_time_factor": sim_time / result.wall_s if result.wall_s > 0 else None,
    }


def settling_time(result: SimResult, reference: Reference, tol: float) -> float | None:
    """Seconds after the trajectory ends until every joint stays within `tol` rad of its goal."""
    after = result.t >= reference.end
    if not after.any():
        return None
    err = np.abs(result.error[after]).max(axis=1)
    outside = np.flatnonzero(err > tol)
    if outside.size == 0:
        return 0.0
    if outside[-1] == len(err) - 1:
        return None  # never settled within the run
    return float(result.t[after][outside[-1] + 1] - reference.end)


def overshoot_pct(result: SimResult, reference: Reference) -> np.ndarray:
    """Per joint: the worst excursion past a segment's goal, in % of that segment's move (moves > 0.05 rad).

    Measured from the segment's start for as long as the joint's reference stays at that goal.
    """
    n = result.q.shape[1]
    worst = np.zeros(n)
    for i, seg in enumerate(reference.segments):
        move = seg.q_goal - reference.sources[i]
        t_end = reference.starts[i] + seg.duration
        for j in np.flatnonzero(np.abs(move) > 0.05):
            after = (result.t >= t_end) & (np.abs(result.q_ref[:, j] - seg.q_goal[j]) > 1e-9)
            stop = result.t[after][0] if after.any() else np.inf
            window = (result.t >= reference.starts[i]) & (result.t < stop)
            if not window.any():
                continue
            past = np.sign(move[j]) * (result.q[window, j] - seg.q_goal[j])
            worst[j] = max(worst[j], 100.0 * max(0.0, float(past.max())) / abs(move[j]))
    return worst
