"""TextWorld agents that choose among the admissible commands, trained with PPO or DQN.

TextWorld's action space is the set of commands admissible in the current state (it changes every
turn), so these agents score (state, command) pairs, DRRN-style (He et al., 2016): PPO samples a
command from the softmax of the scores, DQN reads the scores as Q-values. What the state is:

    text      the turn's text (feedback, room, inventory) and the objective, as bags of words
    graph     the extracted knowledge graph: its triples and the objective attend to each other in
              one transformer layer (relational attention)
    subgoal   the same graph encoder with the current subgoal in place of the objective: the RL half
              of the LM + RL agent; a proposer names subgoals, the reward is shaped by the potential
              Φ = scale × subgoals done (labcli/rl/shaping.py)

Words are hashed into a fixed vocabulary (no tokenizer to fit); every scorer also gets the word
overlap between its goal text and the command as one input feature.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from labcli.config import Section
from labcli.rl.agents.textworld_planner import Planner, completed
from labcli.rl.envs.textworld import PLAYER, Extractor, TextGame, parse_goal
from labcli.rl.shaping import SubgoalPotential

VOCAB = 4096
MAX_TEXT, MAX_GOAL, MAX_TRIPLES, MAX_NAME, MAX_COMMAND = 160, 24, 48, 5, 10


def word_ids(text: str, limit: int) -> list[int]:
    return [1 + zlib.crc32(w.encode()) % (VOCAB - 1) for w in re.findall(r"[a-z0-9]+", text.lower())][:limit] or [0]


def overlap(goal: str, command: str) -> float:
    a, b = set(re.findall(r"[a-z0-9]+", goal.lower())), set(re.findall(r"[a-z0-9]+", command.lower()))
    return len(a & b) / max(1, len(b))


@dataclass
class State:
    """One turn as the networks read it (lists of word ids; padded into tensors in batches)."""

    text: list[int]
    goal: list[int]
    triples: list[tuple[list[int], list[int], list[int]]]
    commands: list[str]
    command_ids: list[list[int]]
    overlaps: list[float]


def encode(turn_text: str, goal_text: str, kg, commands: list[str]) -> State:
    triples = []
    if kg is not None:
        here = kg.value(PLAYER, "at")
        facts = sorted(kg.facts(), key=lambda f: (here not in f, f))[:MAX_TRIPLES]  # the current room's first
        triples = [(word_ids(s, MAX_NAME), word_ids(r.replace("_", " "), 2), word_ids(o, MAX_NAME)) for s, r, o in facts]
    return State(word_ids(turn_text, MAX_TEXT), word_ids(goal_text, MAX_GOAL), triples, commands,
                 [word_ids(c, MAX_COMMAND) for c in commands], [overlap(goal_text, c) for c in commands])


def pad(rows: list[list[int]], width: int | None = None) -> torch.Tensor:
    width = width or max(1, max(len(r) for r in rows))
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r[:width])
    return out


class ChoiceNet(nn.Module):
    """Scores every admissible command of every state in a batch; also a state value."""

    def __init__(self, view: str, dim: int = 64):
        super().__init__()
        self.view = view
        self.words = nn.EmbeddingBag(VOCAB, dim, mode="mean", padding_idx=0)
        self.goal = nn.EmbeddingBag(VOCAB, dim, mode="mean", padding_idx=0)
        self.command = nn.EmbeddingBag(VOCAB, dim, mode="mean", padding_idx=0)
        if view == "text":
            self.state = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU())
        else:
            self.relation = nn.EmbeddingBag(VOCAB, dim, mode="mean", padding_idx=0)
            self.layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True)
            self.state = nn.Sequential(nn.Linear(3 * dim, dim), nn.ReLU())
        self.score = nn.Sequential(nn.Linear(3 * dim + 1, dim), nn.ReLU(), nn.Linear(dim, 1))
        self.value_head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))

    def encode_states(self, states: list[State]) -> torch.Tensor:
        goal = self.goal(pad([s.goal for s in states]))
        if self.view == "text":
            return self.state(torch.cat([self.words(pad([s.text for s in states])), goal], -1))
        n = max(1, max(len(s.triples) for s in states))
        subject = pad([t[0] for s in states for t in s.triples] or [[0]], MAX_NAME)
        relation = pad([t[1] for s in states for t in s.triples] or [[0]], 2)
        obj = pad([t[2] for s in states for t in s.triples] or [[0]], MAX_NAME)
        flat = self.words(subject) + self.relation(relation) + self.words(obj)
        triples = torch.zeros(len(states), n, flat.shape[-1])
        mask = torch.ones(len(states), n + 1, dtype=torch.bool)
        mask[:, 0] = False
        row = 0
        for i, s in enumerate(states):
            k = len(s.triples)
            triples[i, :k] = flat[row:row + k]
            mask[i, 1:k + 1] = False
            row += k
        x = self.layer(torch.cat([goal[:, None], triples], 1), src_key_padding_mask=mask)
        keep = (~mask[:, 1:]).float().unsqueeze(-1)
        mean = (x[:, 1:] * keep).sum(1) / keep.sum(1).clamp(min=1)
        return self.state(torch.cat([x[:, 0], mean, goal], -1))

    def forward(self, states: list[State]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scores [B, K] with -inf padding, mask [B, K], values [B])."""
        h = self.encode_states(states)
        k = max(len(s.commands) for s in states)
        commands = self.command(pad([c for s in states for c in s.command_ids]))
        scores = torch.full((len(states), k), float("-inf"))
        mask = torch.zeros(len(states), k, dtype=torch.bool)
        row = 0
        for i, s in enumerate(states):
            n = len(s.commands)
            c = commands[row:row + n]
            feats = torch.cat([h[i].expand(n, -1), c, h[i] * c, torch.tensor(s.overlaps)[:, None]], -1)
            scores[i, :n] = self.score(feats).squeeze(-1)
            mask[i, :n] = True
            row += n
        return scores, mask, self.value_head(h).squeeze(-1)


# --- the environment as the agents see it ---------------------------------------------------

class TextEpisodes:
    """Episodes over a level's games (round robin), seen as `State`s; rewards are the game's (1 on
    winning), shaped for the subgoal view. `proposer(game, extractor, planner, done) -> subgoal`
    names subgoals for the subgoal view (the planner while training)."""

    def __init__(self, games: list[TextGame], view: str, max_steps: int, proposer=None, scale: float = 0.1,
                 gamma: float = 0.95, patience: int = 8):
        self.games, self.view, self.max_steps = games, view, max_steps
        self.proposer = proposer or planner_proposer
        self.potential = SubgoalPotential(scale, gamma)
        self.patience = patience
        self.next_game = 0
        self.needs_subgoal = False

    def reset(self, game_index: int | None = None) -> State:
        index = self.next_game if game_index is None else game_index
        self.next_game = (index + 1) % len(self.games)
        self.game = self.games[index]
        self.turn = self.game.reset()
        self.extractor = Extractor(self.game.info.types)
        self.extractor.update(self.turn)
        self.goal = parse_goal(self.game.info.objective, self.game.info.types)
        self.planner = Planner(self.game.info.types)
        self.steps, self.done_subgoals, self.subgoal, self.since = 0, [], "look", 0
        self.potential.reset(0)
        self.needs_subgoal = self.view == "subgoal"
        if self.needs_subgoal and self.proposer is not None:
            self.assign(self.proposer(self))
        return self.state()

    def assign(self, subgoal: str) -> None:
        self.subgoal, self.since, self.needs_subgoal = subgoal, 0, False
        self.start_room = self.extractor.room

    def state(self) -> State:
        info = self.game.info
        if self.view == "text":
            return encode(self.turn.text, info.objective, None, self.turn.admissible)
        goal = self.subgoal if self.view == "subgoal" else info.objective
        return encode(self.turn.text, goal, self.extractor.kg, self.turn.admissible)

    def step(self, command: str) -> tuple[State, float, bool, dict]:
        self.turn = self.game.step(command)
        self.extractor.update(self.turn, command)
        self.steps += 1
        reward = 1.0 if self.turn.won else 0.0
        done = self.turn.done or self.steps >= self.max_steps
        if self.view == "subgoal":
            self.since += 1
            if completed(self.subgoal, self.extractor.kg, self.start_room):
                self.done_subgoals.append(self.subgoal)
                self.needs_subgoal = True
            elif self.since >= self.patience:
                self.needs_subgoal = True
            reward = self.potential.shape(reward, len(self.done_subgoals), done)
            if self.needs_subgoal and not done and self.proposer is not None:
                self.assign(self.proposer(self))
        info = {"won": self.turn.won, "steps": self.steps, "subgoals": list(self.done_subgoals)}
        return self.state(), reward, done, info


def planner_proposer(episode: TextEpisodes) -> str:
    """The honest planner's subgoal (the teacher of the executor)."""
    return episode.planner.next(episode.extractor.kg, episode.goal, episode.turn.admissible).subgoal


# --- PPO and DQN over choices ---------------------------------------------------------------

class ChoiceArgs(Section):
    """PPO/DQN settings for the TextWorld agents (the `rl:` section of `lab simulate textworld`)."""

    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate (PPO and DQN)")
    gamma: float = Field(0.95, description="discount (PPO, DQN and the shaping potential)")
    rollout: int = Field(256, ge=8, description="PPO: env steps per update")
    epochs: int = Field(4, ge=1, description="PPO: passes over each rollout")
    minibatch: int = Field(64, ge=1, description="PPO: states per gradient step; DQN: replay samples per update")
    gae_lambda: float = Field(0.95, description="PPO: GAE λ")
    clip: float = Field(0.2, description="PPO: clip range")
    entropy: float = Field(0.01, description="PPO: entropy bonus")
    buffer: int = Field(10_000, ge=1, description="DQN: replay buffer transitions")
    train_every: int = Field(4, ge=1, description="DQN: env steps per gradient step")
    learning_starts: int = Field(200, ge=0, description="DQN: steps before learning")
    target_every: int = Field(200, ge=1, description="DQN: steps between target copies")
    start_epsilon: float = Field(1.0, ge=0, le=1, description="DQN: initial ε")
    end_epsilon: float = Field(0.05, ge=0, le=1, description="DQN: final ε")
    exploration_fraction: float = Field(0.5, gt=0, le=1, description="DQN: share of the steps over which ε decays")


@dataclass
class History:
    episodes: list[dict] = field(default_factory=list)  # {"step", "won", "steps"}


def train_ppo(env: TextEpisodes, net: ChoiceNet, steps: int, args: ChoiceArgs, seed: int, log=None) -> History:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate)
    history = History()
    state = env.reset()
    done_steps = 0
    while done_steps < steps:
        batch = []
        for _ in range(min(args.rollout, steps - done_steps)):
            with torch.no_grad():
                scores, _, value = net([state])
            probs = torch.softmax(scores[0], -1).numpy()
            action = int(rng.choice(len(probs), p=probs / probs.sum()))
            logp = float(torch.log_softmax(scores[0], -1)[action])
            nxt, reward, done, info = env.step(state.commands[action])
            batch.append((state, action, logp, float(value[0]), reward, done))
            done_steps += 1
            if done:
                history.episodes.append({"step": done_steps, "won": info["won"], "steps": info["steps"]})
                if log:
                    log(step=done_steps, episode_return=float(info["won"]), episode_length=info["steps"])
                nxt = env.reset()
            state = nxt
        with torch.no_grad():
            last_value = float(net([state])[2][0])
        advantages, gae = np.zeros(len(batch)), 0.0
        for t in reversed(range(len(batch))):
            _, _, _, value, reward, done = batch[t]
            following = last_value if t == len(batch) - 1 else batch[t + 1][3]
            delta = reward + args.gamma * following * (1 - done) - value
            gae = delta + args.gamma * args.gae_lambda * (1 - done) * gae
            advantages[t] = gae
        returns = advantages + np.array([b[3] for b in batch])
        for _ in range(args.epochs):
            order = rng.permutation(len(batch))
            for lo in range(0, len(batch), args.minibatch):
                idx = order[lo:lo + args.minibatch]
                scores, mask, values = net([batch[i][0] for i in idx])
                logps = torch.log_softmax(scores, -1)
                actions = torch.tensor([batch[i][1] for i in idx])
                new_logp = logps.gather(1, actions[:, None]).squeeze(1)
                entropy = -(logps.exp() * logps.masked_fill(~mask, 0)).sum(-1)
                ratio = (new_logp - torch.tensor([batch[i][2] for i in idx])).exp()
                adv = torch.tensor(advantages[idx], dtype=torch.float32)
                policy = torch.max(-adv * ratio, -adv * ratio.clamp(1 - args.clip, 1 + args.clip)).mean()
                value_loss = 0.5 * ((values - torch.tensor(returns[idx], dtype=torch.float32)) ** 2).mean()
                loss = policy + 0.5 * value_loss - args.entropy * entropy.mean()
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 0.5)
                optimizer.step()
    return history


def train_dqn(env: TextEpisodes, net: ChoiceNet, steps: int, args: ChoiceArgs, seed: int, log=None) -> History:
    import copy

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    target = copy.deepcopy(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate)
    buffer: list[tuple] = []
    history = History()
    state = env.reset()
    for step in range(1, steps + 1):
        span = max(1, int(args.exploration_fraction * steps))
        eps = max(args.end_epsilon, args.start_epsilon + (args.end_epsilon - args.start_epsilon) * step / span)
        if rng.random() < eps:
            action = int(rng.integers(len(state.commands)))
        else:
            with torch.no_grad():
                action = int(net([state])[0][0].argmax())
        nxt, reward, done, info = env.step(state.commands[action])
        buffer.append((state, action, reward, nxt, float(env.turn.done)))  # a step limit is not a terminal state
        if len(buffer) > args.buffer:
            buffer.pop(0)
        if done:
            history.episodes.append({"step": step, "won": info["won"], "steps": info["steps"]})
            if log:
                log(step=step, episode_return=float(info["won"]), episode_length=info["steps"])
            nxt = env.reset()
        state = nxt
        if step > args.learning_starts and step % args.train_every == 0:
            idx = rng.integers(0, len(buffer), args.minibatch)
            sample = [buffer[i] for i in idx]
            with torch.no_grad():
                next_scores = target([s[3] for s in sample])[0]
                best = next_scores.max(-1).values
                goal = torch.tensor([s[2] for s in sample]) + args.gamma * (1 - torch.tensor([s[4] for s in sample])) * best
            q = net([s[0] for s in sample])[0].gather(1, torch.tensor([s[1] for s in sample])[:, None]).squeeze(1)
            loss = F.smooth_l1_loss(q, goal)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            optimizer.step()
        if step % args.target_every == 0:
            target.load_state_dict(net.state_dict())
    return history


def greedy(net: ChoiceNet):
    def act(state: State) -> str:
        with torch.no_grad():
            return state.commands[int(net([state])[0][0].argmax())]
    return act


# --- the LM planner's prompts and the traces it is trained on -------------------------------

def goal_sentence(objective: str, types: dict[str, str]) -> str:
    """The sentence of the objective that names the goal (TextWorld's objectives open with a greeting)."""
    from labcli.rl.envs.textworld import SENTENCE, mentions

    names = [n for n, t in types.items() if t not in ("room", "player", "inventory")]
    named = [s.strip() for s in SENTENCE.split(objective) if mentions(s, names)]
    return (named[-1] if named else objective.strip()).lower()


def prompt(objective: str, types: dict[str, str], kg, done: list[str]) -> str:
    """What the LM planner reads: the goal, where the player is, what it carries, the graph's facts
    (things, states, the map) and the last subgoals done."""
    from labcli.rl.envs.textworld import INVENTORY

    here = kg.value(PLAYER, "at") or "unknown"
    carried = kg.subjects("in", INVENTORY)
    things = [f"{s} {r} {o}" for s, r, o in sorted(kg.facts()) if r in ("at", "in", "on", "is") and s != PLAYER and o != INVENTORY]
    rooms = []
    for room in sorted({s for s, r, _ in kg.facts() if r == "exit"}):
        ways = []
        for direction in kg.objects(room, "exit"):
            door = kg.value(room, direction + "_door")
            ways.append(f"{direction} {kg.value(room, direction) or '?'}" + (f" via {door}" if door else ""))
        rooms.append(f"{room}: {', '.join(ways)}")
    keys = [f"{s} opens {o}" for s, r, o in sorted(kg.facts()) if r == "opens"]
    return (f"goal: {goal_sentence(objective, types)}\nroom: {here}\ncarrying: {', '.join(carried) or 'nothing'}\n"
            f"things: {'; '.join(things) or 'none'}\nmap: {'; '.join(rooms) or 'none'}\n"
            + (f"keys: {'; '.join(keys)}\n" if keys else "") + f"done: {'; '.join(done[-3:]) or 'nothing'}\n")


def short_reasons(reasons: list[str]) -> list[str]:
    """The planner's chain, its first link (the goal) and its last four (the decision)."""
    return reasons if len(reasons) <= 5 else reasons[:1] + reasons[-4:]


def lm_proposer(lm):
    """A proposer for TextEpisodes that asks the LM (one prompt at a time; `propose_batch` batches)."""
    def propose(episode: TextEpisodes) -> str:
        return lm.propose([episode_prompt(episode)])[0].subgoal or "look"
    return propose


def episode_prompt(episode: TextEpisodes) -> str:
    info = episode.game.info
    return prompt(info.objective, info.types, episode.extractor.kg, episode.done_subgoals)


def traces(games: list[TextGame], episodes: int, noise: float, max_steps: int, seed: int) -> list[tuple[str, str]]:
    """(prompt, completion) pairs from the honest planner playing `games`, a share `noise` of its
    moves replaced by random admissible commands so the LM also sees states off the planner's path."""
    from labcli.rl.agents.lm_planner import completion
    from labcli.rl.agents.textworld_planner import resolve

    rng = np.random.default_rng(seed)
    pairs: dict[str, str] = {}
    for game in games:
        info = game.info
        goal = parse_goal(info.objective, info.types)
        for _ in range(episodes):
            turn = game.reset()
            extractor, planner = Extractor(info.types), Planner(info.types)
            extractor.update(turn)
            done: list[str] = []
            subgoal, start_room = None, extractor.room
            for _ in range(max_steps):
                step = planner.next(extractor.kg, goal, turn.admissible)
                if step.subgoal != subgoal:
                    subgoal, start_room = step.subgoal, extractor.room
                pairs.setdefault(prompt(info.objective, info.types, extractor.kg, done), completion(short_reasons(step.reasons), step.subgoal))
                command = resolve(step.command, turn.admissible) if rng.random() >= noise else None
                command = command or turn.admissible[int(rng.integers(len(turn.admissible)))]
                turn = game.step(command)
                extractor.update(turn, command)
                if completed(subgoal, extractor.kg, start_room):
                    done.append(subgoal)
                    subgoal = None
                if turn.done:
                    break
    return list(pairs.items())


# --- the symbolic agents ----------------------------------------------------------------------

def play_symbolic(agent: str, game, limit: int, seed: int):
    """One episode of random or a planner; the extracted graph is scored against the truth each turn."""
    from labcli.rl.agents.textworld_planner import resolve
    from labcli.rl.envs import textworld as env
    from labcli.rl.kg import KnowledgeGraph

    info = game.info
    rng = np.random.default_rng(seed)
    turn = game.reset()
    extractor, planner = env.Extractor(info.types), Planner(info.types)
    extractor.update(turn)
    goal = info.goal if agent == "planner-oracle" else env.parse_goal(info.objective, info.types)
    scores = []
    for steps in range(1, limit + 1):
        scores.append(env.score_extraction(extractor, turn.facts))
        if agent == "random":
            command = turn.admissible[int(rng.integers(len(turn.admissible)))]
        else:
            kg = KnowledgeGraph(turn.facts) if agent == "planner-oracle" else extractor.kg
            step = planner.next(kg, goal, turn.admissible)
            # A planned command the game does not list (a wrong belief): a random admissible one instead.
            command = resolve(step.command, turn.admissible) or turn.admissible[int(rng.integers(len(turn.admissible)))]
        turn = game.step(command)
        extractor.update(turn, command)
        if turn.done:
            break
    return {"success": turn.won, "steps": steps, "walkthrough": len(info.walkthrough)}, scores
