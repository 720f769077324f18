"""Safety layer: what a real torque loop checks every cycle before it trusts the controller.

Torque saturation is enforced by the controllers; this monitor checks joint position and velocity
limits (with margins), the end-effector workspace box and collisions. The first violation trips
the e-stop, which records its reason; the simulation then brakes (damping plus gravity hold).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from labcli.sims.robots import Arm


@dataclass
class SafetyEvent:
    t: float
    kind: str  # joint_position | joint_velocity | workspace | collision | torque_saturation
    detail: str
    estop: bool

    def as_dict(self) -> dict:
        return {"t": round(self.t, 4), "kind": self.kind, "detail": self.detail, "estop": self.estop}


@dataclass
class SafetyMonitor:
    arm: Arm
    position_margin: float = 0.02  # rad inside the joint range
    velocity_margin: float = 0.95  # share of the joint velocity limit
    workspace_min: np.ndarray | None = None
    workspace_max: np.ndarray | None = None
    check_collisions: bool = True
    events: list[SafetyEvent] = field(default_factory=list)
    estop_reason: str | None = None
    estop_time: float | None = None
    _was_saturated: np.ndarray | None = None
    _any_was_saturated: bool = False

    def __post_init__(self) -> None:
        lo, hi = self.arm.spec.workspace
        self.workspace_min = np.asarray(self.workspace_min if self.workspace_min is not None else lo, dtype=float)
        self.workspace_max = np.asarray(self.workspace_max if self.workspace_max is not None else hi, dtype=float)
        self.q_lo = self.arm.q_min + self.position_margin
        self.q_hi = self.arm.q_max - self.position_margin
        self.qd_lim = self.arm.qd_max * self.velocity_margin
        self._was_saturated = np.zeros(self.arm.nq, dtype=bool)

    @property
    def tripped(self) -> bool:
        return self.estop_reason is not None

    def check(self, t: float, q: np.ndarray, qd: np.ndarray, saturated: np.ndarray) -> bool:
        """Run every check; returns True when the e-stop has just been tripped."""
        names = self.arm.joint_names
        any_saturated = saturated.any()
        if any_saturated or self._any_was_saturated:
            for j in np.flatnonzero(saturated & ~self._was_saturated):
                self.events.append(SafetyEvent(t, "torque_saturation", f"{names[j]} at ±{self.arm.tau_max[j]:g} N·m", False))
            self._was_saturated = saturated.copy()
            self._any_was_saturated = bool(any_saturated)
        if self.tripped:
            return False
        out = (q < self.q_lo) | (q > self.q_hi)
        fast = np.abs(qd) > self.qd_lim
        if (out | fast).any():  # one reduction for both joint checks in the common, safe case
            if out.any():
                j = int(np.argmax(out))
                return self.trip(t, "joint_position", f"{names[j]} at {q[j]:.4f} rad, outside [{self.q_lo[j]:.4f}, {self.q_hi[j]:.4f}] (limit minus {self.position_margin} rad margin)")
            j = int(np.argmax(fast))
            return self.trip(t, "joint_velocity", f"{names[j]} at {qd[j]:.3f} rad/s, above {self.qd_lim[j]:.3f} rad/s ({self.velocity_margin:.0%} of the limit)")
        ee = self.arm.data.site_xpos[self.arm.ee_site_id]
        if ((ee < self.workspace_min) | (ee > self.workspace_max)).any():
            return self.trip(t, "workspace", f"end effector at {np.round(ee, 3).tolist()} m, outside the box {self.workspace_min.tolist()}..{self.workspace_max.tolist()}")
        if self.check_collisions:
            hit = self.collision()
            if hit:
                return self.trip(t, "collision", hit)
        return False

    def collision(self) -> str | None:
        """Name the first contact between two bodies (the base-floor pair is excluded in the model)."""
        model, data = self.arm.model, self.arm.data
        if data.ncon == 0:
            return None
        for contact in data.contact[: data.ncon]:
            if contact.dist < 0:
                return f"{part_name(model, contact.geom1)} touches {part_name(model, contact.geom2)} (depth {-contact.dist * 1000:.1f} mm)"
        return None

    def trip(self, t: float, kind: str, detail: str) -> bool:
        self.estop_reason = f"{kind}: {detail}"
        self.estop_time = t
        self.events.append(SafetyEvent(t, kind, detail, True))
        return True


def part_name(model, geom: int) -> str:
    """A link's body name; for the world body's geoms (floor, table, a scene's object or obstacle slot) the geom's name."""
    body = model.geom_bodyid[geom]
    if body == 0:
        return model.geom(geom).name or "floor"
    return model.body(body).name
