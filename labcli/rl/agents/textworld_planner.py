"""A symbolic planner for TextWorld that searches over a knowledge graph.

Given the goal facts and the graph (the true state for the "oracle", the extracted one for the
honest agent), it regresses from the goal to the first subgoal whose preconditions hold ("to put
the laptop on the shelf I need the laptop; it is in the safe; the safe is locked; the key is in my
inventory; so: unlock the safe with the key"), finds routes with Dijkstra over the known map (a
closed door costs more than an open one, a locked one more still) and, when a needed thing has
not been seen, searches: first the closed containers it knows of, then the nearest unexplored exit.

`Planner.next(kg, goal, admissible)` returns a `Step`: the subgoal (what the LM planner learns to
propose and the RL executor learns to carry out), the command that starts it, and the chain of
reasons (the planner's chain of thought, which the LM is trained to write before the subgoal).
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field

from labcli.rl.envs.textworld import DIRECTIONS, INVENTORY, PLAYER
from labcli.rl.kg import Fact, KnowledgeGraph


@dataclass
class Step:
    subgoal: str
    command: str
    reasons: list[str] = field(default_factory=list)


class Stuck(Exception):
    """No way to the goal from what the graph says (a cycle, or nothing left to explore)."""


class Planner:
    """Regression planner with a little memory: containers already searched and keys that did not fit."""

    def __init__(self, types: dict[str, str]):
        self.types = types
        self.searched: set[str] = set()
        self.misfits: set[tuple[str, str]] = set()  # (key, thing) pairs known not to fit
        self.side: set[Fact] = set()  # where to stand for a door's goal, once one side failed
        self.where: list[str] = []
        self.top: Fact | None = None
        self.cross: tuple[str, str, str] | None = None  # (room, direction, door) to go through, once
        self.hints: set[Fact] = set()

    # --- what the graph says -------------------------------------------------------------
    def observe(self, kg: KnowledgeGraph, admissible: list[str]) -> None:
        here = kg.value(PLAYER, "at")
        commands = {c.lower() for c in admissible}
        for thing, _, state in [f for f in kg.facts() if f[1] == "is"]:
            if state == "open" and self.types.get(thing) == "container":
                self.searched.add(thing)
        # Holding a key next to a closed or locked thing, TextWorld lists "unlock/lock it with the
        # key" only when the key fits.
        for key in kg.subjects("in", INVENTORY):
            if self.types.get(key) != "key":
                continue
            for thing in [t for t, k in self.types.items() if k in ("container", "door")]:
                if here in self.rooms_of(kg, thing) and (thing, "is", "open") not in kg \
                        and f"unlock {thing} with {key}" not in commands and f"lock {thing} with {key}" not in commands:
                    self.misfits.add((key, thing))

    def rooms_of(self, kg: KnowledgeGraph, thing: str, depth: int = 0) -> list[str]:
        """The room(s) a thing is in (a door: the rooms on both sides); [] when unknown."""
        if self.types.get(thing) == "room":
            return [thing]
        if self.types.get(thing) == "door":
            sides = sorted({s for s, r, o in kg.facts() if r.endswith("_door") and o == thing})
            return sides
        if (thing, "in", INVENTORY) in kg:
            return [kg.value(PLAYER, "at")] if kg.value(PLAYER, "at") else []
        for relation in ("at", "in", "on"):
            holder = kg.value(thing, relation)
            if holder is not None:
                return [holder] if relation == "at" else self.rooms_of(kg, holder, depth + 1) if depth < 4 else []
        return []

    def state(self, kg: KnowledgeGraph, thing: str) -> str | None:
        for value in ("locked", "closed", "open"):
            if (thing, "is", value) in kg:
                return value
        return None

    def route(self, kg: KnowledgeGraph, start: str, goals: list[str]) -> list[tuple[str, str, str | None]] | None:
        """Cheapest known route from start to any goal room: [(room, direction, door or None)]."""
        cost = {"open": 0, None: 2, "closed": 2, "locked": 6}
        best = {start: 0}
        queue = [(0, start, [])]
        while queue:
            spent, room, path = heapq.heappop(queue)
            if room in goals:
                return path
            if spent > best.get(room, 1e9):
                continue
            for direction in DIRECTIONS:
                nxt = kg.value(room, direction)
                if nxt is None:
                    continue
                door = kg.value(room, direction + "_door")
                step = 1 + (cost[self.state(kg, door)] if door else 0)
                if spent + step < best.get(nxt, 1e9):
                    best[nxt] = spent + step
                    heapq.heappush(queue, (spent + step, nxt, path + [(room, direction, door)]))
        return None

    # --- regression from the goal ---------------------------------------------------------
    def next(self, kg: KnowledgeGraph, goal: set[Fact], admissible: list[str]) -> Step:
        """The next step towards the goal (called only while the game is not won)."""
        self.observe(kg, admissible)
        self.kg, self.active, self.exploring = kg, set(), False
        self.hints = {f for f in goal if f[1] == "opens"}  # "lock the safe with the key": a key named by the goal
        goal = {f for f in goal if f[1] != "opens"} | self.side
        if self.cross is not None:
            step = self.crossing(kg.value(PLAYER, "at"))
            if step is not None:
                return step
        # Where the goal must be reached (a door's goal counts on one side of it).
        self.where = [f[2] for f in goal if f[0] == PLAYER]
        # Fetch things first, then change the world, then stand where the goal says.
        order = sorted(goal, key=lambda f: (f[2] != INVENTORY, f[0] == PLAYER, f))
        for fact in order:
            reasons = [f"goal: {' '.join(fact)}"]
            self.top = fact
            try:
                step = self.achieve(fact, reasons)
            except Stuck as exc:
                return Step("look", "look", reasons + [f"stuck: {exc}"])
            if step is not None:
                return step
        # Every goal fact holds and the game is not won: a door's goal counts on one side only.
        doors = [f[0] for f in goal if self.types.get(f[0]) == "door"]
        here = kg.value(PLAYER, "at")
        other = [r for d in doors for r in self.rooms_of(kg, d) if r != here]
        if other and not self.side:
            self.side = {(PLAYER, "at", other[0])}
            return self.next(kg, goal, admissible)
        exits = [(d, door) for door in doors for d in DIRECTIONS if kg.value(here, d + "_door") == door]
        if exits and not self.side and self.cross is None:  # the other side is unknown: go through
            self.cross = (here, *exits[0])
            return self.next(kg, goal, admissible)
        return Step("look", "look", ["every goal fact holds"])

    def crossing(self, here: str | None) -> Step | None:
        """While committed to trying the far side of a goal's door: open it, go through."""
        room, direction, door = self.cross
        if here != room:
            return None
        reasons = [f"every goal fact held but the game went on: try the other side of the {door}"]
        if self.state(self.kg, door) != "open":
            try:
                step = self.achieve((door, "is", "open"), reasons)
            except Stuck:
                step = None
            if step is not None:
                return step
        return Step(f"go {direction}", f"go {direction}", reasons)

    def achieve(self, fact: Fact, reasons: list[str]) -> Step | None:
        if fact in self.kg:
            return None
        if fact in self.active:
            raise Stuck(f"{' '.join(fact)} needs itself")
        self.active.add(fact)
        try:
            return self._achieve(fact, reasons)
        finally:
            self.active.discard(fact)

    def _achieve(self, fact: Fact, reasons: list[str]) -> Step | None:
        thing, relation, target = fact
        if thing == PLAYER:
            return self.go_to([target], reasons)
        if relation == "in" and target == INVENTORY:
            return self.take(thing, reasons)
        if relation == "is":
            return {"open": self.open, "closed": self.close, "locked": self.lock, "eaten": self.eat}[target](thing, reasons)
        if relation in ("on", "in", "at"):
            return self.place(thing, relation, target, reasons)
        raise Stuck(f"no rule for {relation}")

    def go_to(self, rooms: list[str], reasons: list[str]) -> Step | None:
        """None when already in one of the rooms; else the first step towards the nearest."""
        here = self.kg.value(PLAYER, "at")
        if here in rooms:
            return None
        path = self.route(self.kg, here, rooms) if here else None
        if path is None:
            return self.explore(reasons + [f"no known way to {' or '.join(rooms)}"])
        room, direction, door = path[0]
        destination = self.kg.value(path[-1][0], path[-1][1])
        if door and self.state(self.kg, door) != "open":
            step = self.achieve((door, "is", "open"), reasons + [f"the way to {destination} goes through the {door}"])
            if step is not None:
                return step
        return Step(f"go to {destination}", f"go {direction}", reasons + [f"{destination} is reached by going {direction} from {room}"])

    def side_first(self, fact: Fact, reasons: list[str]) -> Step | None:
        """A goal about a door counts on one side of it: go there first (through it if need be)."""
        thing = fact[0]
        if fact != self.top or self.types.get(thing) != "door":
            return None
        sides = [r for r in self.rooms_of(self.kg, thing) if r in self.where]
        if not sides:
            return None
        try:
            return self.go_to(sides, reasons + [f"the goal counts from the {sides[0]}"])
        except Stuck:
            return None

    def go_to_thing(self, thing: str, reasons: list[str]) -> Step | None:
        rooms = self.rooms_of(self.kg, thing)
        return self.go_to(rooms, reasons) if rooms else self.find(thing, reasons)

    def explore(self, reasons: list[str]) -> Step:
        """Go through the nearest unexplored exit that can be reached (opening doors on the way)."""
        here = self.kg.value(PLAYER, "at")
        frontier = sorted((room, d) for room, r, d in self.kg.facts() if r == "exit" and self.kg.value(room, d) is None)
        if here is None or not frontier:
            raise Stuck("nothing left to explore")
        paths = {room: self.route(self.kg, here, [room]) for room in {room for room, _ in frontier}}
        order = sorted((len(paths[room]), room, d) for room, d in frontier if paths[room] is not None)
        if self.exploring:
            raise Stuck("already exploring")
        self.exploring = True
        try:
            for _, room, direction in order:
                try:
                    # The door first, wherever the player is, so a blocked exit is skipped from anywhere.
                    door = self.kg.value(room, direction + "_door")
                    if door and self.state(self.kg, door) != "open":
                        step = self.achieve((door, "is", "open"), reasons + [f"the unexplored exit {direction} of {room} has the {door}"])
                        if step is not None:
                            return step
                    step = self.go_to([room], reasons + [f"{room} has an unexplored exit"])
                    if step is not None:
                        return step
                    return Step(f"go {direction}", f"go {direction}", reasons + [f"explore: the exit {direction} of {room} is unexplored"])
                except Stuck:
                    continue
        finally:
            self.exploring = False
        raise Stuck("no unexplored exit can be reached")

    def find(self, thing: str, reasons: list[str]) -> Step:
        """The thing has not been seen: open an unsearched container that is not locked, else
        explore, else try the locked containers."""
        reasons = reasons + [f"where the {thing} is is unknown"]
        here = self.kg.value(PLAYER, "at")
        containers = sorted((c for c, k in self.types.items() if k == "container" and c not in self.searched
                             and self.rooms_of(self.kg, c) and (c, "is", "open") not in self.kg),
                            key=lambda c: (here not in self.rooms_of(self.kg, c), c))
        unlocked = [c for c in containers if self.state(self.kg, c) != "locked"]
        locked = [c for c in containers if self.state(self.kg, c) == "locked"]
        for container in unlocked:
            try:
                step = self.achieve((container, "is", "open"), reasons + [f"it may be in the {container}"])
            except Stuck:
                continue
            if step is not None:
                return step
        try:
            return self.explore(reasons)
        except Stuck:
            pass
        for container in locked:
            try:
                step = self.achieve((container, "is", "open"), reasons + [f"it may be in the {container}"])
            except Stuck:
                continue
            if step is not None:
                return step
        raise Stuck(f"the {thing} is nowhere left to look")

    def take(self, thing: str, reasons: list[str]) -> Step | None:
        reasons = reasons + [f"need the {thing}"]
        rooms = self.rooms_of(self.kg, thing)
        if not rooms:
            return self.find(thing, reasons)
        holder = self.kg.value(thing, "in") or self.kg.value(thing, "on")
        if holder and self.kg.value(thing, "in") == holder and self.state(self.kg, holder) != "open":
            step = self.achieve((holder, "is", "open"), reasons + [f"the {thing} is in the {holder}"])
            if step is not None:
                return step
        step = self.go_to(rooms, reasons + [f"the {thing} is in the {rooms[0]}"])
        if step is not None:
            return step
        command = f"take {thing} from {holder}" if holder else f"take {thing}"
        return Step(f"take {thing}", command, reasons + [f"the {thing} is here"])

    def key_for(self, thing: str, reasons: list[str]) -> tuple[str | None, list[str]]:
        known = [k for k in self.kg.subjects("opens", thing) if (k, thing) not in self.misfits]
        known += [k for k, _, t in self.hints if t == thing and k not in known]
        if known:
            return known[0], reasons + [f"the {known[0]} opens the {thing}"]
        words = set(thing.split())
        keys = [k for k, kind in self.types.items() if kind == "key" and (k, thing) not in self.misfits]
        carried = set(self.kg.subjects("in", INVENTORY))
        seen = [k for k in keys if k in carried or self.rooms_of(self.kg, k)]
        ranked = sorted(seen, key=lambda k: (-len(words & set(k.split())), k not in carried, k))
        if ranked:
            return ranked[0], reasons + [f"the {ranked[0]} may open the {thing}"]
        return None, reasons + [f"no key for the {thing} seen yet"]

    def with_key(self, verb: str, thing: str, reasons: list[str]) -> Step | None:
        """`unlock`/`lock` THING: find its key, carry it, go to THING, then VERB THING with KEY."""
        key, reasons = self.key_for(thing, reasons)
        if key is None:
            return self.find(f"key for the {thing}", reasons)
        step = self.achieve((key, "in", INVENTORY), reasons)
        if step is not None:
            return step
        step = self.go_to_thing(thing, reasons)
        if step is not None:
            return step
        return Step(f"{verb} {thing} with {key}", f"{verb} {thing} with {key}", reasons)

    def unlock(self, thing: str, reasons: list[str]) -> Step | None:
        return self.with_key("unlock", thing, reasons + [f"the {thing} is locked"])

    def open(self, thing: str, reasons: list[str]) -> Step | None:
        reasons = reasons + [f"the {thing} must be open"]
        if self.state(self.kg, thing) == "locked":
            step = self.unlock(thing, reasons)
            if step is not None:
                return step
        step = self.go_to_thing(thing, reasons)
        if step is not None:
            return step
        return Step(f"open {thing}", f"open {thing}", reasons)

    def close(self, thing: str, reasons: list[str]) -> Step | None:
        """Closed and unlocked: unlock a locked thing, close an open one."""
        step = self.side_first((thing, "is", "closed"), reasons)
        if step is not None:
            return step
        if self.state(self.kg, thing) == "locked":
            return self.unlock(thing, reasons)
        step = self.go_to_thing(thing, reasons + [f"the {thing} must be closed"])
        if step is not None:
            return step
        if self.state(self.kg, thing) is None:
            return Step("look", "look", reasons + [f"the state of the {thing} is unknown"])
        return Step(f"close {thing}", f"close {thing}", reasons + [f"the {thing} is open"])

    def lock(self, thing: str, reasons: list[str]) -> Step | None:
        reasons = reasons + [f"the {thing} must be locked"]
        step = self.side_first((thing, "is", "locked"), reasons)
        if step is not None:
            return step
        if self.state(self.kg, thing) == "open":
            step = self.close(thing, reasons)
            if step is not None:
                return step
        return self.with_key("lock", thing, reasons)

    def eat(self, thing: str, reasons: list[str]) -> Step | None:
        step = self.achieve((thing, "in", INVENTORY), reasons + [f"the {thing} must be eaten"])
        return step if step is not None else Step(f"eat {thing}", f"eat {thing}", reasons + [f"the {thing} is in hand"])

    def place(self, thing: str, relation: str, target: str, reasons: list[str]) -> Step | None:
        reasons = reasons + [f"the {thing} must be {relation} the {target}"]
        step = self.achieve((thing, "in", INVENTORY), reasons)
        if step is not None:
            return step
        if relation == "in" and self.state(self.kg, target) != "open":
            step = self.achieve((target, "is", "open"), reasons)
            if step is not None:
                return step
        rooms = [target] if relation == "at" else self.rooms_of(self.kg, target)
        if not rooms:
            return self.find(target, reasons)
        step = self.go_to(rooms, reasons)
        if step is not None:
            return step
        verb = {"on": f"put {thing} on {target}", "in": f"insert {thing} into {target}", "at": f"drop {thing}"}[relation]
        return Step(verb, verb, reasons + [f"the {thing} is in hand and the {target} is here"])


def resolve(command: str, admissible: list[str]) -> str | None:
    """The admissible command a planned one stands for (case-insensitive; "take x" also matches
    "take x from y"); None when none does."""
    lower = {c.lower(): c for c in admissible}
    if command.lower() in lower:
        return lower[command.lower()]
    match = re.fullmatch(r"take (.+)", command.lower())
    if match:
        for low, original in lower.items():
            if low.startswith(f"take {match.group(1)} from "):
                return original
    return None


def completed(subgoal: str, kg: KnowledgeGraph, start_room: str | None) -> bool:
    """Whether the graph shows a subgoal done (`start_room`: where the player was when it was set)."""
    here = kg.value(PLAYER, "at")
    patterns = [
        (r"go to (.+)", lambda m: here == m[1]),
        (r"go (north|south|east|west)", lambda m: here is not None and here != start_room),
        (r"take (.+)", lambda m: (m[1], "in", INVENTORY) in kg),
        (r"open (.+)", lambda m: (m[1], "is", "open") in kg),
        (r"close (.+)", lambda m: (m[1], "is", "closed") in kg),
        (r"unlock (.+) with (.+)", lambda m: (m[1], "is", "closed") in kg or (m[1], "is", "open") in kg),
        (r"lock (.+) with (.+)", lambda m: (m[1], "is", "locked") in kg),
        (r"put (.+) on (.+)", lambda m: (m[1], "on", m[2]) in kg),
        (r"insert (.+) into (.+)", lambda m: (m[1], "in", m[2]) in kg),
        (r"drop (.+)", lambda m: (m[1], "at", here) in kg),
        (r"eat (.+)", lambda m: (m[1], "is", "eaten") in kg),
    ]
    for pattern, test in patterns:
        match = re.fullmatch(pattern, subgoal)
        if match:
            return bool(test(match))
    return False
