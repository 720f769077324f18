"""BabyAI agents trained with lab's own PPO and DQN (labcli/rl/ppo.py, dqn.py), and their evaluation.

Every learning agent sees a fixed-size uint8 vector built by a gymnasium wrapper, so lab's PPO and
DQN train it unchanged (`make_envs=`); the network splits the vector again:

    flat      the 7x7x3 view and the mission's words                  FlatObs    -> FlatEncoder (CNN + bag of words)
    graph     the knowledge graph: up to 16 object nodes (type, colour, state, position relative to the
              agent, in view or remembered) and the mission's words      GraphObs   -> GraphEncoder (relational attention)
    subgoal   the view, the cells of the current subgoal's target, the subgoal's kind, what is carried
              and where the nearest target is                          SubgoalEnv -> SubgoalEncoder (CNN)

`SubgoalEnv` is the RL half of the LM + RL agent: a proposer (the symbolic planner while training,
the LM planner when evaluated) names the next subgoal whenever the last one is done (or stalls),
the policy acts, and the reward is shaped by the potential Φ = scale × subgoals done
(labcli/rl/shaping.py), so completing a subgoal pays at once and the optimal policy is unchanged.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from labcli.rl.agents.babyai_planner import (
    GridPlanner,
    neighbours,
    split_subgoal,
    subgoal_done,
)
from labcli.rl.envs.babyai import COLORS, TYPES, VECTORS, GridMemory, make
from labcli.rl.shaping import SubgoalPotential

WORDS = ["<pad>", "<unk>", "go", "to", "the", "a", "pick", "up", "put", "next", "open", "then", "after", "you",
         "and", ",", "object", *COLORS, "key", "ball", "box", "door"]
MISSION_LEN = 24
NODES = 16
VIEW = 7
KINDS = ("go to", "pick up", "go beside", "drop", "open", "explore")


def mission_tokens(text: str) -> np.ndarray:
    ids = [WORDS.index(w) if w in WORDS else 1 for w in re.findall(r"[a-z]+|,", text.lower())][:MISSION_LEN]
    return np.array(ids + [0] * (MISSION_LEN - len(ids)), dtype=np.uint8)


class Quiet(gym.Wrapper):
    """BabyAI prints a line for every mission sample it rejects; keep them off the terminal."""

    def reset(self, **kwargs):
        with contextlib.redirect_stdout(io.StringIO()):
            return self.env.reset(**kwargs)


def box(n: int) -> gym.spaces.Box:
    return gym.spaces.Box(0, 255, (n,), np.uint8)


class FlatObs(gym.ObservationWrapper):
    SIZE = VIEW * VIEW * 3 + MISSION_LEN

    def __init__(self, env):
        super().__init__(env)
        self.observation_space = box(self.SIZE)

    def observation(self, obs):
        return np.concatenate([obs["image"].reshape(-1).astype(np.uint8), mission_tokens(obs["mission"])])


def relative(memory: GridMemory, pos) -> tuple[int, int]:
    """(ahead, right) of a cell seen from the agent, clipped to [-8, 8]."""
    dx, dy = pos[0] - memory.pos[0], pos[1] - memory.pos[1]
    fx, fy = VECTORS[memory.dir]
    ahead, right = dx * fx + dy * fy, dx * -fy + dy * fx
    return int(np.clip(ahead, -8, 8)), int(np.clip(right, -8, 8))


def in_view(memory: GridMemory, pos) -> bool:
    ahead, right = relative(memory, pos)
    return 0 <= ahead < VIEW and abs(right) <= VIEW // 2


class GraphObs(gym.Wrapper):
    """The knowledge graph the agent has built (GridMemory) as node features, plus the mission."""

    SIZE = NODES * 6 + 2 + MISSION_LEN

    def __init__(self, env):
        super().__init__(env)
        self.observation_space = box(self.SIZE)
        self.memory = None
        self.mission = ""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        base = self.env.unwrapped
        self.memory = GridMemory(base.width, base.height)
        self.mission = obs["mission"]
        return self.encode(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self.encode(obs), reward, terminated, truncated, info

    def encode(self, obs) -> np.ndarray:
        self.memory.update(self.env, obs["image"])
        return graph_vector(self.memory, self.mission)


def graph_vector(memory: GridMemory, mission: str) -> np.ndarray:
    nodes = np.zeros((NODES, 6), dtype=np.uint8)
    objects = sorted(memory.objects(), key=lambda pc: abs(pc[0][0] - memory.pos[0]) + abs(pc[0][1] - memory.pos[1]))
    for row, (pos, (kind, color, state)) in enumerate(objects[:NODES]):
        ahead, right = relative(memory, pos)
        nodes[row] = (TYPES.index(kind), COLORS.index(color) + 1, ("open", "closed", "locked").index(state) + 1,
                      ahead + 9, right + 9, 1 + in_view(memory, pos))
    carrying = memory.carrying
    held = np.array([TYPES.index(carrying[0]), COLORS.index(carrying[1]) + 1] if carrying else [0, 0], dtype=np.uint8)
    return np.concatenate([nodes.reshape(-1), held, mission_tokens(mission)])


# --- the subgoal executor's environment ------------------------------------------------------

@dataclass
class Request:
    """What a subgoal proposer is given: the mission, the agent's knowledge and the subgoals done."""

    mission: str
    memory: GridMemory
    done: list[str] = field(default_factory=list)


class PlannerProposer:
    """The symbolic planner as a proposer (one planner per episode, fed every step)."""

    def __init__(self):
        self.planner: GridPlanner | None = None

    def reset(self, mission: str) -> None:
        self.planner = GridPlanner(mission)

    def observe(self, memory: GridMemory, action: int | None) -> None:
        self.planner.observe(memory, action)

    def __call__(self, request: Request) -> str:
        return self.planner.next(request.memory).subgoal


class SubgoalEnv(gym.Wrapper):
    """Runs a proposer over a BabyAI env; observations are the subgoal executor's, rewards are shaped."""

    SIZE = VIEW * VIEW * 4 + 1 + 2 + 3

    def __init__(self, env, proposer, scale: float = 0.1, gamma: float = 0.99, patience: int = 24, progress: bool = False):
        super().__init__(env)
        self.observation_space = box(self.SIZE)
        self.proposer, self.patience, self.progress = proposer, patience, progress
        self.potential = SubgoalPotential(scale, gamma)
        self.memory: GridMemory | None = None
        self.subgoal, self.done_subgoals, self.since = "explore", [], 0
        self.seen_at_start = 0
        self.mission = ""
        self.needs_subgoal = False

    # The proposer may be called inline (training) or in a batch by the caller (evaluation with an LM).
    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        base = self.env.unwrapped
        self.memory = GridMemory(base.width, base.height)
        self.memory.update(self.env, obs["image"])
        self.mission, self.done_subgoals = obs["mission"], []
        if hasattr(self.proposer, "reset"):
            self.proposer.reset(self.mission)
            self.proposer.observe(self.memory, None)
        self.potential.reset(0)
        self.needs_subgoal = True
        if self.proposer is not None:
            self.assign(self.proposer(self.request()))
        return self.observation(), info

    def request(self) -> Request:
        return Request(self.mission, self.memory, list(self.done_subgoals))

    def assign(self, subgoal: str) -> None:
        self.subgoal, self.since, self.needs_subgoal = subgoal, 0, False
        self.seen_at_start = len(self.memory.cells)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.advance(action)
        if self.needs_subgoal and self.proposer is not None and not (terminated or truncated):
            self.assign(self.proposer(self.request()))
        return self.observation(), reward, terminated, truncated, info

    def advance(self, action):
        """The env step and the bookkeeping (memory, subgoal completion, shaped reward), without proposing."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.memory.update(self.env, obs["image"])
        if hasattr(self.proposer, "observe"):
            self.proposer.observe(self.memory, int(action))
        self.since += 1
        if subgoal_done(self.subgoal, self.memory, self.seen_at_start):
            self.done_subgoals.append(self.subgoal)
            self.needs_subgoal = True
        elif self.since >= self.patience:
            self.needs_subgoal = True
        done = terminated or truncated
        info = dict(info, subgoals_done=len(self.done_subgoals), env_reward=float(reward))
        return obs, self.potential.shape(float(reward), self.level(), done), terminated, truncated, info

    def level(self) -> float:
        """Subgoals done, plus (with `progress`) how close the current one is: 1 - moves left / 16."""
        if not self.progress or self.needs_subgoal:
            return len(self.done_subgoals)
        return len(self.done_subgoals) + max(0.0, 1.0 - moves_to(self.memory, self.subgoal) / 16)

    def observation(self) -> np.ndarray:
        return subgoal_vector(self.memory, self.subgoal)


def moves_to(memory: GridMemory, subgoal: str) -> int:
    """Moves (turns and steps) until the subgoal's action can be taken, on the known map; 16 when unknown."""
    from labcli.rl.agents.babyai_planner import front_of, route

    kind, _ = split_subgoal(subgoal)
    cells = set(targets(memory, subgoal))
    if kind == "drop":
        path = route(memory, lambda p, h: (memory.get(front_of(p, h)) or ("",))[0] == "empty")
    elif cells:
        path = route(memory, lambda p, h: front_of(p, h) in cells)
    else:
        return 16
    return 16 if path is None else min(16, len(path))


def targets(memory: GridMemory, subgoal: str) -> list[tuple[int, int]]:
    kind, desc = split_subgoal(subgoal)
    if desc is None:
        return []
    matches = [p for p, c in memory.objects() if desc.matches(c)]
    if kind == "go beside":
        return sorted({n for p in matches for n in neighbours(p) if (memory.get(n) or ("",))[0] == "empty"})
    return matches


def subgoal_vector(memory: GridMemory, subgoal: str) -> np.ndarray:
    """The executor's view: the image (from memory), the target cells, the kind, what is carried and
    where the nearest target is."""
    kind, _ = split_subgoal(subgoal)
    cells = targets(memory, subgoal)
    image = np.zeros((VIEW, VIEW, 4), dtype=np.uint8)
    fx, fy = VECTORS[memory.dir]
    rx, ry = -fy, fx
    for i in range(VIEW):
        for j in range(VIEW):
            ahead, right = VIEW - 1 - j, i - VIEW // 2
            pos = (memory.pos[0] + fx * ahead + rx * right, memory.pos[1] + fy * ahead + ry * right)
            cell = memory.get(pos)
            if cell is not None:
                image[i, j, :3] = (TYPES.index(cell[0]), COLORS.index(cell[1]), ("open", "closed", "locked").index(cell[2]))
            image[i, j, 3] = pos in cells
    if cells:
        nearest = min(cells, key=lambda p: abs(p[0] - memory.pos[0]) + abs(p[1] - memory.pos[1]))
        ahead, right = relative(memory, nearest)
        rel = (ahead + 9, right + 9, 1)
    else:
        rel = (0, 0, 0)
    held = (TYPES.index(memory.carrying[0]), COLORS.index(memory.carrying[1]) + 1) if memory.carrying else (0, 0)
    return np.concatenate([image.reshape(-1), [KINDS.index(kind) if kind else 5], held, rel]).astype(np.uint8)


# --- networks ---------------------------------------------------------------------------------

class FlatEncoder(nn.Module):
    """The MiniGrid CNN on the view plus a bag of the mission's words."""

    def __init__(self):
        super().__init__()
        from labcli.rl.common import ImageEncoder

        self.image = ImageEncoder()
        self.words = nn.EmbeddingBag(len(WORDS), 32, mode="mean", padding_idx=0)
        self.out_dim = 64 + 32

    def forward(self, obs):
        image = obs[:, :VIEW * VIEW * 3].reshape(-1, VIEW, VIEW, 3)
        return torch.cat([self.image(image), self.words(obs[:, VIEW * VIEW * 3:].long())], -1)


class GraphEncoder(nn.Module):
    """Relational attention over the knowledge graph: the object nodes and one mission node (a bag
    of the mission's words) attend to each other in one transformer layer; the mission node's output
    and the mean of the object nodes' are the state."""

    def __init__(self, dim: int = 48):
        super().__init__()
        self.kind, self.color, self.state = nn.Embedding(len(TYPES), dim), nn.Embedding(len(COLORS) + 1, dim), nn.Embedding(4, dim)
        self.ahead, self.right, self.visible = nn.Embedding(18, dim), nn.Embedding(18, dim), nn.Embedding(3, dim)
        self.words = nn.EmbeddingBag(len(WORDS), dim, mode="mean", padding_idx=0)
        self.held_kind, self.held_color = nn.Embedding(len(TYPES), dim), nn.Embedding(len(COLORS) + 1, dim)
        self.layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True)
        self.out_dim = 3 * dim

    def forward(self, obs):
        obs = obs.long()
        nodes = obs[:, :NODES * 6].reshape(-1, NODES, 6)
        held = obs[:, NODES * 6: NODES * 6 + 2]
        node_x = (self.kind(nodes[..., 0]) + self.color(nodes[..., 1]) + self.state(nodes[..., 2])
                  + self.ahead(nodes[..., 3]) + self.right(nodes[..., 4]) + self.visible(nodes[..., 5]))
        goal = (self.words(obs[:, NODES * 6 + 2:]) + self.held_kind(held[:, 0]) + self.held_color(held[:, 1]))[:, None]
        pad = torch.cat([torch.zeros_like(nodes[:, :1, 0], dtype=torch.bool), nodes[..., 5] == 0], 1)
        x = self.layer(torch.cat([goal, node_x], 1), src_key_padding_mask=pad)
        keep = (~pad[:, 1:]).float().unsqueeze(-1)
        node_mean = (x[:, 1:] * keep).sum(1) / keep.sum(1).clamp(min=1)
        return torch.cat([x[:, 0], node_mean, goal[:, 0]], -1)


class SubgoalEncoder(nn.Module):
    """A CNN over the view with the target cells as a fourth channel, plus the subgoal's kind, what is
    carried and where the nearest target is (ahead, right)."""

    def __init__(self):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(4, 16, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 2), nn.ReLU(),
                                 nn.Conv2d(32, 64, 2), nn.ReLU(), nn.Flatten())
        self.kind = nn.Embedding(len(KINDS), 16)
        self.held = nn.Embedding(len(TYPES) * (len(COLORS) + 1), 16)
        self.ahead, self.right, self.known = nn.Embedding(18, 16), nn.Embedding(18, 16), nn.Embedding(2, 16)
        self.out_dim = 64 + 16 * 3

    def forward(self, obs):
        obs = obs.long()
        n = VIEW * VIEW * 4
        image = obs[:, :n].reshape(-1, VIEW, VIEW, 4).permute(0, 3, 1, 2).float()
        rest = obs[:, n:]
        held = rest[:, 1] * (len(COLORS) + 1) + rest[:, 2]
        where = self.ahead(rest[:, 3]) + self.right(rest[:, 4]) + self.known(rest[:, 5])
        return torch.cat([self.cnn(image), self.kind(rest[:, 0]), self.held(held), where], -1)


ENCODERS = {"flat": FlatEncoder, "graph": GraphEncoder, "subgoal": SubgoalEncoder}


def wrap(level: str, view: str, proposer=None, scale: float = 0.1, gamma: float = 0.99, render: bool = False,
         progress: bool = False):
    """The level's env as an agent of kind `view` (flat, graph, subgoal) sees it."""
    from labcli.rl.envstate import Replayable

    env = Quiet(make(level, render=render))
    stats = gym.wrappers.RecordEpisodeStatistics(env)  # the env's own return, before shaping
    if view == "flat":
        return Replayable(FlatObs(stats))
    if view == "graph":
        return Replayable(GraphObs(stats))
    # proposer: None -> the symbolic planner; False -> none (the caller assigns subgoals, in batches)
    proposer = PlannerProposer() if proposer is None else proposer or None
    return Replayable(SubgoalEnv(stats, proposer, scale, gamma, progress=progress))


def vector_envs(levels: str | list[str], view: str, scale: float = 0.1, gamma: float = 0.99, progress: bool = False) -> Callable:
    """make_envs(num_envs, seed) for lab's PPO/DQN: same-step autoreset, as labcli.rl.common does;
    with several levels, env i plays levels[i % len(levels)]."""
    levels = [levels] if isinstance(levels, str) else list(levels)

    def make_envs(num_envs: int, seed: int):
        def thunk(i):
            def build():
                env = wrap(levels[i % len(levels)], view, None, scale, gamma, progress=progress)
                env.action_space.seed(seed + i)
                return env
            return build

        return gym.vector.SyncVectorEnv([thunk(i) for i in range(num_envs)],
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

    return make_envs


# --- evaluation ---------------------------------------------------------------------------------

@dataclass
class Episode:
    seed: int
    success: bool
    steps: int
    subgoals: list[str] = field(default_factory=list)


def evaluate(level: str, view: str, act, seeds: list[int], lm=None) -> list[Episode]:
    """One episode per mission seed, all in lockstep (one batched forward per step); with `lm`
    (subgoal view), the LM planner proposes every subgoal, in one batch per step."""
    envs = [wrap(level, view, False if lm is not None else None) for _ in seeds]
    obs = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds)]
    inner = [env.env for env in envs]
    active, results = list(range(len(seeds))), {}
    step = 0
    while active:
        step += 1
        if lm is not None:
            waiting = [i for i in active if inner[i].needs_subgoal]
            if waiting:
                proposals = lm.propose([prompt(inner[i].mission, inner[i].memory, inner[i].done_subgoals) for i in waiting])
                for i, proposal in zip(waiting, proposals):
                    inner[i].assign(proposal.subgoal or "explore")
                    obs[i] = inner[i].observation()
        actions = act(torch.as_tensor(np.stack([obs[i] for i in active])))
        still = []
        for i, action in zip(active, actions.tolist()):
            obs[i], reward, terminated, truncated, info = envs[i].step(int(action))
            if terminated or truncated:
                subgoals = list(inner[i].done_subgoals) if view == "subgoal" else []
                results[i] = Episode(seeds[i], info.get("env_reward", reward) > 0, step, subgoals)
                envs[i].close()
            else:
                still.append(i)
        active = still
    return [results[i] for i in range(len(seeds))]


# --- the LM planner's prompts and the traces it is trained on -------------------------------

def prompt(mission: str, memory: GridMemory, done: list[str]) -> str:
    """What the LM planner reads: the mission, what is carried and in front, every object seen
    (where it is from the agent: ahead / right), and the subgoals done so far."""
    front = memory.get(memory.front)
    seen = []
    for pos, cell in sorted(memory.objects(), key=lambda pc: abs(pc[0][0] - memory.pos[0]) + abs(pc[0][1] - memory.pos[1])):
        ahead, right = relative(memory, pos)
        seen.append(f"{cell[1]} {cell[0]} {ahead} ahead {right} right")
    carried = f"{memory.carrying[1]} {memory.carrying[0]}" if memory.carrying else "nothing"
    in_front = "nothing" if front is None or front[0] == "empty" else front[0] if front[0] == "wall" else f"{front[1]} {front[0]}"
    return (f"mission: {mission}\ncarrying: {carried}\nin front: {in_front}\nseen: {'; '.join(seen[:12]) or 'nothing'}\n"
            f"done: {'; '.join(done) or 'nothing'}\n")


class LMProposer:
    """The LM planner as a proposer for SubgoalEnv (unbatched; evaluation batches through `propose`)."""

    def __init__(self, lm):
        self.lm = lm

    def __call__(self, request: Request) -> str:
        return self.lm.propose([prompt(request.mission, request.memory, request.done)])[0].subgoal or "explore"


def traces(level: str, seeds: list[int], noise: float, seed: int) -> list[tuple[str, str]]:
    """(prompt, completion) pairs from the honest planner on the missions of `seeds`, a share `noise`
    of its actions replaced by random ones so the LM also sees states off the planner's path."""
    from labcli.rl.agents.lm_planner import completion

    rng = np.random.default_rng(seed)
    pairs: dict[str, str] = {}
    for mission_seed in seeds:
        env = Quiet(make(level))
        obs, _ = env.reset(seed=mission_seed)
        memory = GridMemory(env.unwrapped.width, env.unwrapped.height)
        memory.update(env, obs["image"])
        planner = GridPlanner(obs["mission"])
        done, subgoal, seen_at = [], None, 0
        for _ in range(env.unwrapped.max_steps):
            step = planner.next(memory)
            if step.subgoal != subgoal:
                subgoal, seen_at = step.subgoal, len(memory.cells)
            pairs.setdefault(prompt(obs["mission"], memory, done), completion(step.reasons[1:], step.subgoal))
            action = step.action if rng.random() >= noise else int(rng.integers(0, 6))
            obs_next, reward, terminated, truncated, _ = env.step(action)
            memory.update(env, obs_next["image"])
            planner.observe(memory, action)
            if subgoal_done(subgoal, memory, seen_at):
                done.append(subgoal)
                subgoal = None
            if terminated or truncated:
                break
        env.close()
    return list(pairs.items())


# --- the symbolic agents ----------------------------------------------------------------------

def play_symbolic(agent: str, level: str, seed: int, rng_seed: int, score: bool = False):
    """One episode of random or a planner; with `score`, the extracted graph against the truth each step."""
    from labcli.rl.envs import babyai
    from labcli.rl.kg import precision_recall

    env = Quiet(babyai.make(level))
    obs, _ = env.reset(seed=seed)
    memory = babyai.GridMemory(env.unwrapped.width, env.unwrapped.height)
    memory.update(env, obs["image"])
    planner = GridPlanner(obs["mission"])
    rng = np.random.default_rng(rng_seed)
    scores, last, won = [], None, False
    for step in range(1, env.unwrapped.max_steps + 1):
        if score:
            scores.append((precision_recall(memory.facts(), babyai.grid_facts(env)),
                           precision_recall(memory.facts(), babyai.seen_facts(env, memory))))
        if agent == "random":
            action = int(rng.integers(0, 6))
        else:
            known = babyai.GridMemory.full(env) if agent == "planner-oracle" else memory
            planner.observe(known, last)
            action = planner.next(known).action
        obs, reward, terminated, truncated, _ = env.step(action)
        memory.update(env, obs["image"])
        last = action
        if terminated or truncated:
            won = reward > 0
            break
    env.close()
    return Episode(seed, won, step), scores
