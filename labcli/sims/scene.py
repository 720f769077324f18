"""Tabletop scenes for the arms: a table, named objects (colour, shape, size) and an obstacle, from a seed.

One compiled model per arm holds the table, an overhead camera and a fixed set of geom *slots*;
`SceneArm.apply` writes a scene into the slots (type, size, pose, colour, collision flags), so
thousands of scenes cost no recompilation. Every scene geom belongs to the world body: objects and
obstacles are static, MuJoCo never collides them with each other or the table (one body), and any
contact of the arm with them is a collision for the safety monitor.

Frames: each arm has a *front frame* (u forward from the base, v to the robot's left, z up),
rotated by `Layout.front_yaw` about the base. Scenes are generated in it, so 'left of the bowl'
means +v (the robot's left) and 'behind the bowl' means further from the robot for both arms.
Bowls are drawn as flat discs (MuJoCo has no bowl primitive).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field

import mujoco
import numpy as np

from labcli.sims.robots import Arm, arm_from_model, build_spec, preload_triton

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.12), "green": (0.12, 0.65, 0.2), "blue": (0.12, 0.3, 0.85),
    "yellow": (0.95, 0.85, 0.1), "purple": (0.55, 0.2, 0.7), "orange": (0.95, 0.5, 0.1),
}
SHAPES = ("cube", "ball", "cylinder", "bowl")
SIZES = ("small", "large")
OBSTACLES = ("wall", "pillar")
# MuJoCo size parameters per (shape, size word): box half-extents, sphere radius, cylinder (radius, half-height)
SHAPE_SIZES: dict[tuple[str, str], tuple[float, ...]] = {
    ("cube", "small"): (0.02, 0.02, 0.02), ("cube", "large"): (0.035, 0.035, 0.035),
    ("ball", "small"): (0.022,), ("ball", "large"): (0.038,),
    ("cylinder", "small"): (0.02, 0.03), ("cylinder", "large"): (0.032, 0.045),
    ("bowl", "small"): (0.045, 0.012), ("bowl", "large"): (0.065, 0.015),
}
SCENE_GROUP = 2  # geom group of the floor, table, objects and obstacles (the arm's meshes are group 0)
MAX_OBJECTS = 5
MAX_OBSTACLES = 1
OBSTACLE_RISE = (0.01, 0.03)  # m of obstacle above the travel height (see random_obstacle)
GEOM_TYPES = {"cube": mujoco.mjtGeom.mjGEOM_BOX, "wall": mujoco.mjtGeom.mjGEOM_BOX, "ball": mujoco.mjtGeom.mjGEOM_SPHERE,
              "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER, "bowl": mujoco.mjtGeom.mjGEOM_CYLINDER,
              "pillar": mujoco.mjtGeom.mjGEOM_CYLINDER}


@dataclass(frozen=True)
class Layout:
    """Where the table is for one arm, in its front frame."""

    front_yaw: float  # rad, the direction the arm faces at home
    u_range: tuple[float, float]  # forward distance band of the work area (m)
    v_max: float  # lateral half-width of the work area (m)
    table_top: float  # z of the table surface (m)
    travel_z: float  # end-effector height for every goal and path (m)
    camera_height: float  # overhead camera above the table centre (m)
    rest: tuple[float, ...]  # posture the IK's null space pulls towards over the table
    kd: tuple[float, ...] | None = None  # PID derivative gains for scene tasks (default: the arm's)


LAYOUTS = {
    # Panda: near joint 2 = 0 (end effector close to the base) joints 1 and 3 line up, and with the
    # default Kd of 50 N·m·s/rad on the small inertia of their counter-rotation the 1 kHz PID oscillates
    # until the velocity check trips (8 of 40 expert runs); Kd 25 on joints 1 and 3 tracks as well
    # (RMS 5.8e-4 vs 6.0e-4 rad) with no e-stop (scratch test on 40 held-out tasks).
    "franka": Layout(front_yaw=0.0, u_range=(0.35, 0.68), v_max=0.32, table_top=0.05, travel_z=0.25, camera_height=1.1,
                     rest=(0.0, 0.5, 0.0, -2.0, 0.0, 2.5, 0.785), kd=(25, 50, 25, 50, 20, 20, 3)),
    "ur5": Layout(front_yaw=np.pi / 2, u_range=(0.32, 0.65), v_max=0.32, table_top=0.05, travel_z=0.25, camera_height=1.1,
                  rest=(-1.5708, -1.5708, 1.5708, -1.5708, -1.5708, 0.0)),
}


@dataclass(frozen=True)
class Thing:
    """An object or obstacle: world-frame centre, MuJoCo size parameters and yaw."""

    kind: str  # a shape (cube, ball, cylinder, bowl) or an obstacle (wall, pillar)
    pos: tuple[float, float, float]
    size: tuple[float, ...]
    yaw: float = 0.0
    colour: str | None = None
    size_word: str | None = None

    @property
    def name(self) -> str:
        return " ".join(w for w in (self.size_word, self.colour, self.kind) if w)

    @property
    def is_obstacle(self) -> bool:
        return self.kind in OBSTACLES

    @property
    def half_height(self) -> float:
        return self.size[0] if self.kind == "ball" else self.size[-1] if self.kind != "cube" and self.kind != "wall" else self.size[2]

    @property
    def top(self) -> float:
        return self.pos[2] + self.half_height


@dataclass
class Scene:
    """A table with objects and obstacles, and where the end effector starts (world frame)."""

    arm: str
    seed: int
    objects: list[Thing]
    obstacles: list[Thing]
    start: tuple[float, float, float]

    def describe(self) -> str:
        return ", ".join(t.name for t in self.objects) + (f"; obstacles: {', '.join(t.name for t in self.obstacles)}" if self.obstacles else "")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Scene":
        raw = json.loads(text)
        things = {k: [Thing(**{**t, "pos": tuple(t["pos"]), "size": tuple(t["size"])}) for t in raw[k]] for k in ("objects", "obstacles")}
        return cls(raw["arm"], raw["seed"], things["objects"], things["obstacles"], tuple(raw["start"]))


def front_to_world(layout: Layout, u: float, v: float) -> np.ndarray:
    c, s = np.cos(layout.front_yaw), np.sin(layout.front_yaw)
    return np.array([c * u - s * v, s * u + c * v])


def world_to_front(layout: Layout, xy: np.ndarray) -> np.ndarray:
    c, s = np.cos(layout.front_yaw), np.sin(layout.front_yaw)
    return np.array([c * xy[0] + s * xy[1], -s * xy[0] + c * xy[1]])


def front_axes(layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """World xy directions of the robot's forward (u) and left (v)."""
    return front_to_world(layout, 1.0, 0.0), front_to_world(layout, 0.0, 1.0)


def footprint(thing: Thing) -> float:
    """Radius of the thing's footprint on the table (m)."""
    if thing.kind in ("cube", "wall"):
        return float(np.hypot(thing.size[0], thing.size[1]))
    return float(thing.size[0])


# ----------------------------------------------------------------------------- the model with slots


@dataclass
class SceneArm:
    """An arm model with a table, an overhead camera and geom slots for one scene at a time."""

    arm: Arm
    layout: Layout
    object_slots: list[int]
    obstacle_slots: list[int]
    camera: str = "overhead"
    scene: Scene | None = None
    _renderers: dict = field(default_factory=dict)

    def apply(self, scene: Scene) -> None:
        """Write `scene` into the slots (unused slots are hidden and never collide)."""
        model = self.arm.model
        for slots, things in ((self.object_slots, scene.objects), (self.obstacle_slots, scene.obstacles)):
            if len(things) > len(slots):
                raise ValueError(f"scene has {len(things)} things, the model has {len(slots)} slots")
            for k, gid in enumerate(slots):
                if k < len(things):
                    write_geom(model, gid, things[k])
                else:
                    hide_geom(model, gid)
        self.scene = scene

    def copy(self) -> "SceneArm":
        """An independent arm (own model and data) with the same scene: one per parallel episode."""
        model = copy.deepcopy(self.arm.model)
        arm = arm_from_model(model, self.arm.spec)
        return SceneArm(arm, self.layout, self.object_slots, self.obstacle_slots, self.camera, self.scene)

    def render(self, q: np.ndarray, size: int, with_arm: bool = False) -> np.ndarray:
        """The overhead camera's RGB image (size x size, uint8). Without the arm by default: the policy
        knows its joint angles, the arm would hide part of the table, and software EGL spends most of
        a small frame on the arm's meshes."""
        data = self._renderers.get("data")
        if data is None:
            data = self._renderers["data"] = mujoco.MjData(self.arm.model)
        data.qpos[: self.arm.nq] = q
        mujoco.mj_kinematics(self.arm.model, data)
        mujoco.mj_camlight(self.arm.model, data)
        renderer = self._renderers.get(size)
        if renderer is None:
            preload_triton()
            renderer = self._renderers[size] = mujoco.Renderer(self.arm.model, size, size)
            # software EGL (llvmpipe) spends 98 % of a small frame on shadows and reflections: off
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        option = mujoco.MjvOption()
        if not with_arm:
            option.geomgroup[:] = [1 if g == SCENE_GROUP else 0 for g in range(len(option.geomgroup))]
        renderer.update_scene(data, camera=self.camera, scene_option=option)
        return renderer.render().copy()

    def close(self) -> None:
        for key, renderer in self._renderers.items():
            if key != "data":
                renderer.close()
        self._renderers.clear()


def write_geom(model: mujoco.MjModel, gid: int, thing: Thing) -> None:
    size = np.zeros(3)
    if thing.kind in ("cube", "wall"):
        size[:] = thing.size
        half = size.copy()
    elif thing.kind == "ball":
        size[0] = thing.size[0]
        half = np.full(3, thing.size[0])
    else:  # cylinders: radius, half-height
        size[:2] = thing.size
        half = np.array([thing.size[0], thing.size[0], thing.size[1]])
    model.geom_type[gid] = GEOM_TYPES[thing.kind]
    model.geom_size[gid] = size
    model.geom_pos[gid] = thing.pos
    model.geom_quat[gid] = [np.cos(thing.yaw / 2), 0, 0, np.sin(thing.yaw / 2)]
    model.geom_rgba[gid] = (*COLOURS[thing.colour], 1.0) if thing.colour else (0.55, 0.5, 0.45, 1.0)
    model.geom_contype[gid] = model.geom_conaffinity[gid] = 1
    # broad-phase bounds are computed at compile time: keep them in step with the new shape
    model.geom_rbound[gid] = float(np.linalg.norm(half))
    model.geom_aabb[gid] = [0, 0, 0, *half]


def hide_geom(model: mujoco.MjModel, gid: int) -> None:
    model.geom_contype[gid] = model.geom_conaffinity[gid] = 0
    model.geom_rgba[gid, 3] = 0.0
    model.geom_pos[gid] = [0, 0, -5]


def load_scene_arm(name: str, timestep: float = 0.001) -> SceneArm:
    """Compile arm `name` with a table, an overhead camera and empty object/obstacle slots."""
    spec, arm_spec = build_spec(name, timestep)
    layout = LAYOUTS[name]
    for geom in spec.worldbody.geoms:
        geom.group = SCENE_GROUP  # the floor
    u0, u1 = layout.u_range
    centre = front_to_world(layout, (u0 + u1) / 2, 0.0)
    half_u, half_v = (u1 - u0) / 2 + 0.1, layout.v_max + 0.1
    spec.worldbody.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=[half_u, half_v, layout.table_top / 2],
                            pos=[centre[0], centre[1], layout.table_top / 2], quat=yaw_quat(layout.front_yaw),
                            rgba=[0.62, 0.5, 0.38, 1], group=SCENE_GROUP)
    # looking straight down, image up = the robot's forward direction
    fwd, left = front_axes(layout)
    spec.worldbody.add_camera(name="overhead", pos=[centre[0], centre[1], layout.camera_height],
                              xyaxes=[-left[0], -left[1], 0, fwd[0], fwd[1], 0], fovy=45)
    names = [f"object{k}" for k in range(MAX_OBJECTS)] + [f"obstacle{k}" for k in range(MAX_OBSTACLES)]
    for k, slot in enumerate(names):
        # distinct off-origin poses so the compiler keeps a per-geom frame (geom_sameframe = none)
        spec.worldbody.add_geom(name=slot, type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.01, 0.01, 0.01],
                                pos=[3 + k, 3, -5], quat=yaw_quat(0.3 + k), group=SCENE_GROUP)
    model = spec.compile()
    # MuJoCo's mid-phase culls geom pairs with a per-body bounding-volume hierarchy built at compile
    # time; the world body's was built around the hidden slots and never sees a scene written later,
    # so it dropped every contact with objects and obstacles. Without it each body pair's geoms are
    # tested directly (bounding spheres, then the narrow phase): exact for any slot contents, and
    # cheap here (each arm link has one collision geom, the world body 8).
    model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_MIDPHASE)
    slots = [model.geom(n).id for n in names]
    for gid in slots:
        hide_geom(model, gid)
    return SceneArm(arm_from_model(model, arm_spec), layout, slots[:MAX_OBJECTS], slots[MAX_OBJECTS:])


def yaw_quat(yaw: float) -> list[float]:
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


# ----------------------------------------------------------------------------- the generator


def random_object(rng: np.random.Generator, layout: Layout, taken: set, u: float, v: float) -> Thing:
    """An object with a (colour, shape) pair not in `taken`, resting on the table at front-frame (u, v)."""
    while True:
        colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
        if (colour, shape) not in taken:
            break
    taken.add((colour, shape))
    size_word = str(rng.choice(SIZES))
    size = SHAPE_SIZES[(shape, size_word)]
    half_height = size[0] if shape == "ball" else size[-1]
    xy = front_to_world(layout, u, v)
    return Thing(shape, (float(xy[0]), float(xy[1]), layout.table_top + half_height), size,
                 float(rng.uniform(0, np.pi / 2)) if shape == "cube" else 0.0, colour, size_word)


def random_obstacle(rng: np.random.Generator, layout: Layout, centre_uv: np.ndarray, across_uv: np.ndarray) -> Thing:
    """A wall (long side along `across_uv`) or a pillar standing on the table, its top 1-3 cm above the travel height.

    Low enough that the arm's wrist and forearm (the Panda's link 5-6 hang 5-10 cm above its flange)
    pass over it while the end effector goes around it, high enough that an end effector travelling
    straight through it at the travel height touches it (1-3 cm deep). Taller obstacles (10-15 cm
    above, before) left no contact-free way around for the Panda on most scenes."""
    kind = str(rng.choice(OBSTACLES))
    top = layout.travel_z + float(rng.uniform(OBSTACLE_RISE[0], OBSTACLE_RISE[1]))
    half_h = (top - layout.table_top) / 2
    xy = front_to_world(layout, *centre_uv)
    pos = (float(xy[0]), float(xy[1]), layout.table_top + half_h)
    if kind == "wall":
        across = front_to_world(layout, *across_uv)
        yaw = float(np.arctan2(across[1], across[0]))
        return Thing("wall", pos, (float(rng.uniform(0.04, 0.06)), 0.015, half_h), yaw)
    return Thing("pillar", pos, (float(rng.uniform(0.03, 0.045)), half_h))
