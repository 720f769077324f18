"""A symbolic planner for BabyAI missions over the agent's grid knowledge.

The mission is parsed into instructions (`labcli.rl.envs.babyai.parse_mission`); each becomes a
short chain of subgoals, chosen from what the grid shows:

    go to X        face a cell holding an X                 (goto, and before pick up / open)
    pick up X      the X in front is picked up
    go beside X    face an empty cell next to an X        (put ... next to X)
    drop X         the carried X is put down in front
    open X         toggle the door X in front
    explore        face an unseen cell                      (X has not been seen yet)

Routes are breadth-first searches over poses (x, y, heading) with the moves left, right and
forward; cells not seen yet count as free, so the plan is optimistic and is remade every step.
With the full grid (`GridMemory.full`) this is the "oracle"; with `GridMemory` updated from the
agent's own views it is the honest planner.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from labcli.rl.envs.babyai import (DROP, FORWARD, LEFT, PICKUP, RIGHT, TOGGLE, VECTORS, Desc, GridMemory,
                                   Instruction, parse_desc, parse_mission)


@dataclass
class Step:
    subgoal: str
    action: int
    reasons: list[str] = field(default_factory=list)


def free(memory: GridMemory, pos) -> bool:
    cell = memory.get(pos)
    if not (0 <= pos[0] < memory.width and 0 <= pos[1] < memory.height):
        return False
    return cell is None or cell[0] == "empty" or (cell[0] == "door" and cell[2] == "open")


def route(memory: GridMemory, accept) -> list[int] | None:
    """The shortest list of moves (left, right, forward) to a pose where `accept(pos, dir)` holds."""
    start = (memory.pos, memory.dir)
    seen = {start}
    queue = deque([(start, [])])
    while queue:
        (pos, heading), path = queue.popleft()
        if accept(pos, heading):
            return path
        if len(path) > 4 * (memory.width + memory.height):
            continue
        ahead = (pos[0] + VECTORS[heading][0], pos[1] + VECTORS[heading][1])
        for action, nxt in ((LEFT, (pos, (heading - 1) % 4)), (RIGHT, (pos, (heading + 1) % 4)),
                            (FORWARD, (ahead, heading) if free(memory, ahead) else None)):
            if nxt is not None and nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, path + [action]))
    return None


def front_of(pos, heading) -> tuple[int, int]:
    return (pos[0] + VECTORS[heading][0], pos[1] + VECTORS[heading][1])


def subgoal_done(subgoal: str, memory: GridMemory, seen_before: int) -> bool:
    """Whether the grid shows a subgoal done (`seen_before`: cells known when it was set)."""
    kind, desc = split_subgoal(subgoal)
    front = memory.get(memory.front)
    if kind == "explore":
        return len(memory.cells) > seen_before
    if desc is None:
        return False
    if kind == "go to":
        return desc.matches(front)
    if kind == "pick up":
        return memory.carrying is not None and desc.matches((*memory.carrying, "open"))
    if kind == "go beside":
        return front is not None and front[0] == "empty" and any(
            desc.matches(memory.get(n)) for n in neighbours(memory.front))
    if kind == "drop":
        return memory.carrying is None
    if kind == "open":
        return desc.matches(front) and front[2] == "open"
    return False


SUBGOAL_KINDS = ("go to", "pick up", "go beside", "drop", "open", "explore")


def split_subgoal(subgoal: str) -> tuple[str | None, Desc | None]:
    for kind in SUBGOAL_KINDS:
        if subgoal == kind or subgoal.startswith(kind + " "):
            return kind, parse_desc(subgoal[len(kind):].strip()) if kind != "explore" else None
    return None, None


def neighbours(pos) -> list[tuple[int, int]]:
    return [(pos[0] + dx, pos[1] + dy) for dx, dy in VECTORS]


def blocks(memory: GridMemory, spot, spare=()) -> bool:
    """Whether putting something on `spot` would leave a neighbouring object (other than those in
    `spare`) with no free side."""
    for cell in neighbours(spot):
        if (memory.get(cell) or ("",))[0] in ("key", "ball", "box") and cell not in spare:
            if not any(n != spot and (memory.get(n) or ("",))[0] == "empty" for n in neighbours(cell)):
                return True
    return False


class GridPlanner:
    """Works through the mission's instructions in order, one subgoal at a time."""

    def __init__(self, mission: str):
        self.mission = mission
        self.instructions: list[Instruction] = parse_mission(mission)
        self.index = 0  # instructions done

    def observe(self, memory: GridMemory, last_action: int | None) -> None:
        """Advance past the instructions the last action completed."""
        while self.index < len(self.instructions):
            instruction = self.instructions[self.index]
            front = memory.get(memory.front)
            done = {
                "goto": lambda: instruction.obj.matches(front),
                "pickup": lambda: last_action == PICKUP and memory.carrying is not None
                and instruction.obj.matches((*memory.carrying, "open")),
                "open": lambda: last_action == TOGGLE and instruction.obj.matches(front) and front[2] == "open",
                "putnext": lambda: last_action == DROP and instruction.obj.matches(front) and any(
                    instruction.target.matches(memory.get(n)) for n in neighbours(memory.front) if n != memory.pos),
            }[instruction.kind]()
            if not done:
                return
            self.index += 1
            last_action = None  # one action completes one instruction

    def next(self, memory: GridMemory) -> Step:
        if not self.instructions:
            return Step("explore", self.explore(memory), [f"mission not understood: {self.mission}"])
        if self.index >= len(self.instructions):
            return Step("explore", LEFT, ["every instruction is done"])
        instruction = self.instructions[self.index]
        reasons = [f"mission: {self.mission}",
                   f"instruction {self.index + 1} of {len(self.instructions)}: {instruction.text}"]
        if instruction.kind == "goto":
            return self.go_to(memory, instruction.obj, reasons)
        if instruction.kind == "open":
            return self.go_to(memory, instruction.obj, reasons, then=("open", TOGGLE))
        if instruction.kind == "pickup":
            return self.pick_up(memory, instruction.obj, reasons)
        return self.put_next(memory, instruction.obj, instruction.target, reasons)

    def locate(self, memory: GridMemory, desc: Desc) -> list[tuple[int, int]]:
        return [p for p, c in memory.objects() if desc.matches(c) and p != memory.pos]

    def go_to(self, memory, desc: Desc, reasons, then: tuple[str, int] | None = None) -> Step:
        if then is None and memory.carrying is not None and desc.matches((*memory.carrying, "open")):
            return self.drop(memory, reasons + [f"{desc.text} is carried: put it down in front"])
        targets = self.locate(memory, desc)
        if not targets:
            return Step("explore", self.explore(memory), reasons + [f"no {desc.type} like {desc.text} seen yet"])
        if desc.matches(memory.get(memory.front)):
            if then:
                return Step(f"{then[0]} {desc.text}", then[1], reasons + [f"{desc.text} is in front"])
            return Step(f"go to {desc.text}", LEFT, reasons + ["already there"])
        path = route(memory, lambda p, h: front_of(p, h) in targets)
        if not path:
            return Step("explore", self.explore(memory), reasons + [f"no way to {desc.text} known"])
        return Step(f"go to {desc.text}", path[0], reasons + [f"{desc.text} is {len(path)} moves away"])

    def pick_up(self, memory, desc: Desc, reasons) -> Step:
        if memory.carrying is not None:  # a pick-up counts only with free hands, even of the same thing
            return self.drop(memory, reasons + ["hands must be free"])
        return self.go_to(memory, desc, reasons + [f"need {desc.text}"], then=("pick up", PICKUP))

    def drop(self, memory, reasons) -> Step:
        carried = f"the {memory.carrying[1]} {memory.carrying[0]}"
        front = memory.get(memory.front)
        if front is not None and front[0] == "empty" and not blocks(memory, memory.front):
            return Step(f"drop {carried}", DROP, reasons + ["the cell in front is free"])
        path = route(memory, lambda p, h: (memory.get(front_of(p, h)) or ("",))[0] == "empty"
                     and front_of(p, h) != p and not blocks(memory, front_of(p, h)))
        return Step(f"drop {carried}", path[0] if path else LEFT, reasons + ["find a free cell to drop it"])

    def put_next(self, memory, obj: Desc, target: Desc, reasons) -> Step:
        if memory.carrying is None or not obj.matches((*memory.carrying, "open")):
            return self.pick_up(memory, obj, reasons + [f"first pick up {obj.text}"])
        free_spots = {n for p in self.locate(memory, target) for n in neighbours(p) if (memory.get(n) or ("",))[0] == "empty"}
        later = [i.obj for i in self.instructions[self.index + 1:]]
        spare = [] if any(d.type == target.type and d.color in (None, target.color) for d in later) else self.locate(memory, target)
        spots = {n for n in free_spots if not blocks(memory, n, spare)} or free_spots
        if not spots:
            return Step("explore", self.explore(memory), reasons + [f"no free cell next to {target.text} seen yet"])
        front = memory.front
        if front in spots and front != memory.pos and (memory.get(front) or ("",))[0] == "empty":
            return Step(f"drop {obj.text}", DROP, reasons + [f"in front is a free cell next to {target.text}"])
        path = route(memory, lambda p, h: front_of(p, h) in spots and front_of(p, h) != p)
        if not path:
            return Step("explore", self.explore(memory), reasons + [f"no way next to {target.text} known"])
        return Step(f"go beside {target.text}", path[0], reasons + [f"a free cell next to {target.text} is {len(path)} moves away"])

    def explore(self, memory: GridMemory) -> int:
        path = route(memory, lambda p, h: memory.get(front_of(p, h)) is None
                     and 0 <= front_of(p, h)[0] < memory.width and 0 <= front_of(p, h)[1] < memory.height)
        return path[0] if path else LEFT
