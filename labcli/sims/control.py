"""Joint-space controllers, minimum-jerk trajectories and damped-least-squares IK.

Conventions: q, qd, qdd are joint positions (rad), velocities (rad/s), accelerations (rad/s²);
tau is joint torque (N·m). Everything is numpy and allocation-light so a 1 kHz loop stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from labcli.sims.robots import Arm, mass_matrix


class JointPID:
    """tau = Kp e + Ki ∫e + Kd ė (+ qfrc_bias), saturated at the torque limits.

    Anti-windup: the integral is clamped to `i_clamp` (N·m of integral torque per joint) and is not
    advanced on a joint whose torque is saturated in the direction the error pushes (conditional
    integration), so it cannot wind up while the motor is at its limit.
    """

    def __init__(self, kp, ki, kd, tau_max, dt: float, feedforward: bool = True, i_clamp: float = 0.3):
        self.kp, self.ki, self.kd = (np.asarray(g, dtype=float) for g in (kp, ki, kd))
        self.tau_max = np.asarray(tau_max, dtype=float)
        self.dt = dt
        self.feedforward = feedforward
        # The integral term never exceeds `i_clamp` x the torque limit: |Ki ∫e| <= i_clamp tau_max.
        self.i_bound = np.divide(i_clamp * self.tau_max, self.ki, out=np.zeros_like(self.ki), where=self.ki > 0)
        self.integral = np.zeros_like(self.kp)
        self.saturated = np.zeros(len(self.kp), dtype=bool)

    def reset(self) -> None:
        self.integral[:] = 0.0

    def __call__(self, q, qd, q_ref, qd_ref, qdd_ref, bias) -> np.ndarray:
        error = q_ref - q
        raw = self.kp * error + self.kd * (qd_ref - qd) + self.ki * self.integral
        if self.feedforward:
            raw = raw + bias
        tau = np.minimum(np.maximum(raw, -self.tau_max), self.tau_max)  # np.clip is slower on tiny arrays
        self.saturated = tau != raw
        if self.saturated.any():
            pushing_further = self.saturated & (error * raw > 0)
            self.integral += np.where(pushing_further, 0.0, error * self.dt)
        else:
            self.integral += error * self.dt
        np.minimum(np.maximum(self.integral, -self.i_bound, out=self.integral), self.i_bound, out=self.integral)
        return tau


class ComputedTorque:
    """tau = M(q) (q̈_ref + Kp e + Kd ė + Ki ∫e) + qfrc_bias: the arm behaves like decoupled unit masses.

    Gains come from one natural frequency `wn` (rad/s), a triple pole at -wn per joint:
    Kp = 3 wn², Kd = 3 wn, Ki = wn³. The integral absorbs what the model-based terms leave out
    (joint friction loss); it is clamped and frozen while saturated, like the PID's.
    """

    def __init__(self, arm: Arm, wn: float, tau_max, dt: float):
        self.arm = arm
        self.kp, self.kd, self.ki = 3.0 * wn * wn, 3.0 * wn, wn**3
        self.tau_max = np.asarray(tau_max, dtype=float)
        self.dt = dt
        self.M = np.zeros((arm.model.nv, arm.model.nv))
        self.integral = np.zeros(arm.nq)
        self.i_limit = 0.05  # rad·s
        self.saturated = np.zeros(arm.nq, dtype=bool)

    def reset(self) -> None:
        self.integral[:] = 0.0

    def __call__(self, q, qd, q_ref, qd_ref, qdd_ref, bias) -> np.ndarray:
        mass_matrix(self.arm.model, self.arm.data, self.M)
        error = q_ref - q
        accel = qdd_ref + self.kp * error + self.kd * (qd_ref - qd) + self.ki * self.integral
        raw = self.M[: len(q), : len(q)] @ accel + bias
        tau = np.clip(raw, -self.tau_max, self.tau_max)
        self.saturated = tau != raw
        self.integral += np.where(self.saturated, 0.0, error * self.dt)
        np.clip(self.integral, -self.i_limit, self.i_limit, out=self.integral)
        return tau


def quintic(q0: np.ndarray, q1: np.ndarray, duration: float, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-jerk interpolation from q0 to q1 (zero velocity and acceleration at both ends).

    `t` is an array of times since the segment start; returns (len(t), n) positions, velocities, accelerations.
    """
    delta = (q1 - q0)[None, :]
    s = np.clip(np.asarray(t, dtype=float) / duration, 0.0, 1.0)[:, None]
    pos = 10 * s**3 - 15 * s**4 + 6 * s**5
    vel = (30 * s**2 - 60 * s**3 + 30 * s**4) / duration
    acc = (60 * s - 180 * s**2 + 120 * s**3) / duration**2
    return q0 + pos * delta, vel * delta, acc * delta


def hermite(knots: np.ndarray, tangents: np.ndarray, dt: float, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cubic Hermite interpolation through `knots` (K+1, n) spaced `dt` apart, with velocities `tangents`.

    Returns positions, velocities and accelerations at times `t` (clamped to the knots' span): C1
    through every knot, so a receding-horizon policy's waypoints become a smooth joint reference.
    """
    t = np.clip(np.asarray(t, dtype=float), 0.0, dt * (len(knots) - 1))
    k = np.minimum((t / dt).astype(int), len(knots) - 2)
    s = (t / dt - k)[:, None]
    p0, p1, m0, m1 = knots[k], knots[k + 1], tangents[k] * dt, tangents[k + 1] * dt
    s2, s3 = s * s, s * s * s
    pos = (2 * s3 - 3 * s2 + 1) * p0 + (s3 - 2 * s2 + s) * m0 + (-2 * s3 + 3 * s2) * p1 + (s3 - s2) * m1
    vel = ((6 * s2 - 6 * s) * p0 + (3 * s2 - 4 * s + 1) * m0 + (-6 * s2 + 6 * s) * p1 + (3 * s2 - 2 * s) * m1) / dt
    acc = ((12 * s - 6) * p0 + (6 * s - 4) * m0 + (-12 * s + 6) * p1 + (6 * s - 2) * m1) / dt**2
    return pos, vel, acc


def central_tangents(knots: np.ndarray, dt: float, v_first: np.ndarray | None = None, v_last: np.ndarray | None = None) -> np.ndarray:
    """Catmull-Rom velocities (q[k+1] - q[k-1]) / 2dt; the ends get `v_first` / `v_last` (default zero)."""
    m = np.zeros_like(knots)
    m[1:-1] = (knots[2:] - knots[:-2]) / (2 * dt)
    if v_first is not None:
        m[0] = v_first
    if v_last is not None:
        m[-1] = v_last
    return m


def quintic_duration(q0: np.ndarray, q1: np.ndarray, qd_max: np.ndarray, speed: float, minimum: float = 0.5) -> float:
    """Shortest duration whose peak velocity (1.875 Δq / T for minimum jerk) is `speed` × the limit."""
    peak = np.max(1.875 * np.abs(q1 - q0) / (speed * qd_max))
    return float(max(minimum, peak))


@dataclass
class IKResult:
    q: np.ndarray
    error: float  # final end-effector position error (m)
    iterations: int
    converged: bool


def solve_ik(arm: Arm, target: np.ndarray, q_start: np.ndarray, damping: float = 0.05, tol: float = 5e-4,
             max_iters: int = 500, null_gain: float = 0.05, max_step: float = 0.1,
             scratch: mujoco.MjData | None = None, rest: np.ndarray | None = None) -> IKResult:
    """Damped least squares on the end-effector site position: Δq = Jᵀ(JJᵀ + λ²I)⁻¹ e.

    Solved on a scratch MjData so the simulation state is untouched. A small null-space pull
    towards the home pose keeps redundant arms (the Panda) in a natural posture; joints are
    clamped to their limits every iteration. `scratch`: a reusable MjData of the same model (for
    many short solves, e.g. along a path); `rest`: the posture the null space pulls towards
    (default: home).
    """
    model = arm.model
    scratch = mujoco.MjData(model) if scratch is None else scratch
    q = q_start.copy()
    jac_pos = np.zeros((3, model.nv))
    eye = np.eye(3)
    err_norm = np.inf
    for it in range(1, max_iters + 1):
        scratch.qpos[: arm.nq] = q
        mujoco.mj_kinematics(model, scratch)
        mujoco.mj_comPos(model, scratch)
        err = target - scratch.site_xpos[arm.ee_site_id]
        err_norm = float(np.linalg.norm(err))
        if err_norm < tol:
            return IKResult(q, err_norm, it, True)
        err *= min(1.0, max_step / err_norm)  # far targets: walk towards them instead of jumping
        mujoco.mj_jacSite(model, scratch, jac_pos, None, arm.ee_site_id)
        J = jac_pos[:, : arm.nq]
        JJt_inv = np.linalg.inv(J @ J.T + damping**2 * eye)
        dq = J.T @ JJt_inv @ err
        null = np.eye(arm.nq) - J.T @ JJt_inv @ J
        dq += null @ (null_gain * ((arm.home if rest is None else rest) - q))
        q = np.clip(q + dq, arm.q_min, arm.q_max)
    return IKResult(q, err_norm, max_iters, err_norm < tol)
