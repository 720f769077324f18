"""BabyAI missions (MiniGrid's language levels) at three lengths, the grid as a knowledge graph,
and the BabyAI bot's walkthroughs.

Levels (every mission is one room, so the length of the mission is what grows):

    easy    BabyAI-GoToLocal-v0      "go to the red ball"                         1 instruction
    medium  BabyAI-PutNextLocal-v0   "put the red ball next to the blue key"      1 instruction, 4 subgoals
    hard    BabyAI-BossLevel-v0 in one 8x8 room with 8 objects, sequences only ("put a box next to a
            key, then go to a purple ball", "pick up a ball after you ...")  2-4 instructions

The agent sees MiniGrid's 7x7 egocentric view (object, colour, state per cell) and the mission
text; it knows its own position, heading and what it carries. `GridMemory` is what it has seen
(every cell of every view, placed on the map by its pose); `grid_facts` reads the same facts off
the full grid (the truth). Facts: (agent, at, "x,y"), (agent, facing, east|south|west|north),
(agent, carries, "red ball"), ("red ball", at, "x,y"), ("red door", is, open|closed|locked).
Walls are map cells, not facts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from labcli.errors import UserError
from labcli.rl.kg import Fact, KnowledgeGraph

HEADINGS = ("east", "south", "west", "north")  # MiniGrid's agent_dir 0..3
VECTORS = ((1, 0), (0, 1), (-1, 0), (0, -1))
TYPES = ("unseen", "empty", "wall", "floor", "door", "key", "ball", "box", "goal", "lava", "agent")
COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
STATES = ("open", "closed", "locked")
OBJECTS = ("key", "ball", "box", "door")
ACTIONS = ("left", "right", "forward", "pickup", "drop", "toggle", "done")
LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE, DONE = range(7)


@dataclass(frozen=True)
class Level:
    env_id: str
    kwargs: dict = field(default_factory=dict)


LEVELS = {
    "easy": Level("BabyAI-GoToLocal-v0"),
    "medium": Level("BabyAI-PutNextLocal-v0"),
    "hard": Level("BabyAI-BossLevel-v0", dict(room_size=8, num_rows=1, num_cols=1, num_dists=8, locked_room_prob=0,
                                              locations=False, unblocking=False, implicit_unlock=False,
                                              action_kinds=("goto", "pickup", "putnext"), instr_kinds=("seq",))),
}


def level_of(name: str) -> Level:
    if name not in LEVELS:
        raise UserError(f"unknown BabyAI level '{name}'", f"one of: {', '.join(LEVELS)}")
    return LEVELS[name]


def make(level: str, render: bool = False):
    """The level's gymnasium env (dict observations: image, direction, mission)."""
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers the BabyAI-* envs)

    spec = level_of(level)
    return gym.make(spec.env_id, render_mode="rgb_array" if render else None, **spec.kwargs)


def quiet_reset(env, seed: int):
    """reset(seed): BabyAI prints a line for every rejected mission sample; keep them off the terminal."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return env.reset(seed=seed)


def walkthrough(level: str, seed: int) -> int:
    """Steps the BabyAI bot (minigrid.utils.baby_ai_bot) takes to solve the mission of `seed`."""
    from minigrid.utils.baby_ai_bot import BabyAIBot

    env = make(level)
    quiet_reset(env, seed)
    bot = BabyAIBot(env)
    for step in range(1, env.unwrapped.max_steps + 1):
        _, reward, terminated, truncated, _ = env.step(bot.replan())
        if terminated or truncated:
            env.close()
            return step if reward > 0 else env.unwrapped.max_steps
    env.close()
    return env.unwrapped.max_steps


# --- the mission ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Desc:
    """An object description: type, colour (None: any), and the words the mission used."""

    type: str
    color: str | None
    text: str

    def matches(self, cell) -> bool:
        return cell is not None and cell[0] == self.type and (self.color is None or cell[1] == self.color)


DESC = re.compile(r"(the|a) (?:(red|green|blue|purple|yellow|grey) )?(key|ball|box|door|object)")


def parse_desc(text: str) -> Desc | None:
    match = DESC.fullmatch(text.strip())
    if not match:
        return None
    return Desc(match.group(3), match.group(2), match.group(0))


@dataclass(frozen=True)
class Instruction:
    kind: str  # goto, pickup, putnext, open
    obj: Desc
    target: Desc | None = None  # putnext: the object to put it next to

    @property
    def text(self) -> str:
        if self.kind == "putnext":
            return f"put {self.obj.text} next to {self.target.text}"
        return {"goto": "go to", "pickup": "pick up", "open": "open"}[self.kind] + f" {self.obj.text}"


def parse_mission(mission: str) -> list[Instruction]:
    """The instructions of a BabyAI mission in the order they must be done ("A after you B" is B,
    then A); [] when the text is not BabyAI's grammar."""
    text = mission.strip().lower()
    if " after you " in text:
        first, second = text.split(" after you ", 1)
        return _checked(parse_mission(second), parse_mission(first))
    if ", then " in text:
        first, second = text.split(", then ", 1)
        return _checked(parse_mission(first), parse_mission(second))
    if " and " in text:
        first, second = text.split(" and ", 1)
        return _checked(parse_mission(first), parse_mission(second))
    patterns = [(r"go to (.+)", "goto"), (r"pick up (.+)", "pickup"), (r"open (.+)", "open")]
    for pattern, kind in patterns:
        match = re.fullmatch(pattern, text)
        if match and parse_desc(match.group(1)):
            return [Instruction(kind, parse_desc(match.group(1)))]
    match = re.fullmatch(r"put (.+) next to (.+)", text)
    if match and parse_desc(match.group(1)) and parse_desc(match.group(2)):
        return [Instruction("putnext", parse_desc(match.group(1)), parse_desc(match.group(2)))]
    return []


def _checked(a: list, b: list) -> list:
    return a + b if a and b else []


# --- the grid as knowledge ---------------------------------------------------------------------

def cell_name(cell) -> str:
    """"red ball" for (ball, red, _)."""
    return f"{cell[1]} {cell[0]}"


class GridMemory:
    """What the agent knows: every cell it has seen ((type, colour, state), walls and empty cells
    included), its pose and what it carries. `update` reads one observation."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.cells: dict[tuple[int, int], tuple[str, str, str]] = {}
        self.pos: tuple[int, int] = (0, 0)
        self.dir = 0
        self.carrying: tuple[str, str] | None = None

    @classmethod
    def full(cls, env) -> "GridMemory":
        """The truth: every cell of the grid, as if seen."""
        base = env.unwrapped
        memory = cls(base.width, base.height)
        for x in range(base.width):
            for y in range(base.height):
                memory.cells[(x, y)] = decode_object(base.grid.get(x, y))
        memory.pose_from(env)
        return memory

    def pose_from(self, env) -> None:
        base = env.unwrapped
        self.pos, self.dir = (int(base.agent_pos[0]), int(base.agent_pos[1])), int(base.agent_dir)
        self.carrying = (base.carrying.type, base.carrying.color) if base.carrying else None
        self.cells[self.pos] = ("empty", "red", "open")  # the agent stands on a free cell

    def update(self, env, image: np.ndarray) -> None:
        """Place the 7x7 egocentric view on the map (as minigrid's BabyAI bot does)."""
        self.pose_from(env)
        size = image.shape[0]
        fx, fy = VECTORS[self.dir]
        rx, ry = -fy, fx
        top_left = (self.pos[0] + fx * (size - 1) - rx * (size // 2), self.pos[1] + fy * (size - 1) - ry * (size // 2))
        for i in range(size):
            for j in range(size):
                kind = int(image[i, j, 0])
                if kind == 0:  # unseen
                    continue
                x = top_left[0] - fx * j + rx * i
                y = top_left[1] - fy * j + ry * i
                if 0 <= x < self.width and 0 <= y < self.height and (x, y) != self.pos:
                    self.cells[(x, y)] = (TYPES[kind], COLORS[int(image[i, j, 1])], STATES[int(image[i, j, 2])])

    def get(self, pos) -> tuple[str, str, str] | None:
        return self.cells.get(tuple(pos))

    @property
    def front(self) -> tuple[int, int]:
        return (self.pos[0] + VECTORS[self.dir][0], self.pos[1] + VECTORS[self.dir][1])

    def objects(self) -> list[tuple[tuple[int, int], tuple[str, str, str]]]:
        return sorted((p, c) for p, c in self.cells.items() if c[0] in OBJECTS)

    def facts(self) -> set[Fact]:
        facts = {("agent", "at", f"{self.pos[0]},{self.pos[1]}"), ("agent", "facing", HEADINGS[self.dir])}
        if self.carrying:
            facts.add(("agent", "carries", f"{self.carrying[1]} {self.carrying[0]}"))
        for (x, y), cell in self.objects():
            facts.add((cell_name(cell), "at", f"{x},{y}"))
            if cell[0] == "door":
                facts.add((cell_name(cell), "is", cell[2]))
        return facts

    def graph(self) -> KnowledgeGraph:
        return KnowledgeGraph(self.facts())


def decode_object(obj) -> tuple[str, str, str]:
    if obj is None:
        return ("empty", "red", "open")
    state = "open" if getattr(obj, "is_open", False) else "locked" if getattr(obj, "is_locked", False) else \
        "closed" if obj.type == "door" else "open"
    return (obj.type, obj.color, state)


def grid_facts(env) -> set[Fact]:
    """The true facts, read off the full grid."""
    return GridMemory.full(env).facts()


def seen_facts(env, memory: GridMemory) -> set[Fact]:
    """The true facts about the cells the agent has seen (and about itself)."""
    truth = GridMemory.full(env)
    truth.cells = {p: c for p, c in truth.cells.items() if p in memory.cells}
    return truth.facts()
