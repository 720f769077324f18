"""DQN for MiniGrid in one file, in the CleanRL spirit: replay buffer, target network, ε-greedy.

One env, a uniform replay buffer in numpy, Huber TD loss on Q(s, a) against
r + γ (1 - done) max_a' Q_target(s', a'), hard target updates every `target_every` steps.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from labcli.config import Section
from labcli.errors import UserError
from labcli.rl.common import ImageEncoder, finished_episodes, make_vector_env
from labcli.rl.envstate import restore_vector, vector_state
from labcli.rl.loop import RunLog
from labcli.runs import seed_everything


class DQNArgs(Section):
    """DQN hyperparameters (the `dqn:` section of `lab simulate minigrid`)."""

    buffer_size: int = Field(50_000, ge=1, description="replay buffer transitions")
    learning_rate: float = Field(5e-4, gt=0, description="Adam learning rate")
    # MiniGrid pays for time only through the final reward, so at γ=0.99 a do-nothing action is
    # worth ~1 % less than the best one; Q-errors flip that and the greedy agent stalls (seen here
    # on Empty-5x5 after ~5k frames). γ=0.95 and faster target copies keep it learning.
    gamma: float = Field(0.95, description="discount (0.99 stalls the greedy agent on MiniGrid)")
    batch_size: int = Field(64, ge=1, description="replay samples per update")
    learning_starts: int = Field(1_000, ge=0, description="frames of pure exploration before learning")
    train_every: int = Field(4, ge=1, description="env steps per gradient step")
    target_every: int = Field(250, ge=1, description="env steps between target-network copies")
    start_epsilon: float = Field(1.0, ge=0, le=1, description="initial ε of ε-greedy")
    end_epsilon: float = Field(0.05, ge=0, le=1, description="final ε of ε-greedy")
    exploration_fraction: float = Field(0.5, gt=0, le=1, description="share of --frames over which ε decays linearly")


class QNetwork(nn.Module):
    """The image CNN (or `encoder`: any module with `out_dim` features) and a 64-unit ReLU head."""

    def __init__(self, n_actions: int, encoder: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else ImageEncoder()
        self.head = nn.Sequential(nn.Linear(getattr(self.encoder, "out_dim", 64), 64), nn.ReLU(), nn.Linear(64, n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(obs))

    @torch.no_grad()
    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs).argmax(-1)


class ReplayBuffer:
    """A ring buffer of (obs, action, reward, next_obs, done) stored as uint8 images."""

    def __init__(self, size: int, obs_shape: tuple[int, ...]):
        self.obs = np.zeros((size, *obs_shape), dtype=np.uint8)
        self.next_obs = np.zeros((size, *obs_shape), dtype=np.uint8)
        self.actions = np.zeros(size, dtype=np.int64)
        self.rewards = np.zeros(size, dtype=np.float32)
        self.dones = np.zeros(size, dtype=np.float32)
        self.size, self.pos, self.full = size, 0, False

    def add(self, obs, action, reward, next_obs, done) -> None:
        i = self.pos
        self.obs[i], self.actions[i], self.rewards[i], self.next_obs[i], self.dones[i] = obs, action, reward, next_obs, done
        self.pos = (self.pos + 1) % self.size
        self.full = self.full or self.pos == 0

    def state(self) -> dict:
        """The filled part as tensors (for a checkpoint)."""
        n = self.size if self.full else self.pos
        arrays = {k: torch.from_numpy(getattr(self, k)[:n].copy()) for k in ("obs", "next_obs", "actions", "rewards", "dones")}
        return {**arrays, "size": self.size, "pos": self.pos, "full": self.full}

    def load_state(self, state: dict) -> None:
        if state["size"] != self.size:
            raise UserError(f"the checkpoint's replay buffer holds {state['size']} transitions, this run's {self.size}",
                            f"resume with dqn.buffer_size={state['size']}")
        n = len(state["actions"])
        for key in ("obs", "next_obs", "actions", "rewards", "dones"):
            getattr(self, key)[:n] = state[key].numpy()
        self.pos, self.full = state["pos"], state["full"]

    def sample(self, rng: np.random.Generator, n: int):
        idx = rng.integers(0, self.size if self.full else self.pos, n)
        return (torch.as_tensor(self.obs[idx]), torch.as_tensor(self.actions[idx]), torch.as_tensor(self.rewards[idx]),
                torch.as_tensor(self.next_obs[idx]), torch.as_tensor(self.dones[idx]))


def epsilon_at(step: int, total: int, args: DQNArgs) -> float:
    span = max(1, int(args.exploration_fraction * total))
    return max(args.end_epsilon, args.start_epsilon + (args.end_epsilon - args.start_epsilon) * step / span)


def train(env_id: str, total_frames: int, seed: int, args: DQNArgs, q_network: QNetwork | None = None, *,
          run=None, checkpoint_every: int = 0, progress: bool = False, make_envs=None) -> QNetwork:
    """Train for `total_frames` env steps. With a `run`: metrics, checkpoints every `checkpoint_every`
    frames and at the end (the replay buffer included), and exact resume (see labcli/rl/loop.py).

    `make_envs(num_envs, seed)` replaces the MiniGrid env (`env_id` then only names the run): any
    same-step-autoreset vector env with uint8 observations, with `q_network` (any module mapping a
    batch of them to Q-values, with `greedy`) built for them."""
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    envs = make_envs(1, seed) if make_envs else make_vector_env(env_id, 1, seed)
    n_actions = int(envs.single_action_space.n)
    q_network = q_network or QNetwork(n_actions)
    default = type(q_network) is QNetwork and type(q_network.encoder) is ImageEncoder
    # A fresh default network draws its init from the RNG; kept (not deepcopy) so seeded runs stay identical.
    target = QNetwork(n_actions) if default else copy.deepcopy(q_network)
    target.load_state_dict(q_network.state_dict())
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate)
    buffer = ReplayBuffer(args.buffer_size, envs.single_observation_space.shape)

    obs, _ = envs.reset(seed=seed)
    first_step = 1
    log = RunLog(run, total_frames, f"dqn {env_id}", checkpoint_every, progress)
    state = log.resume(q_network, optimizer)
    if state is not None:
        target.load_state_dict(state["target"])
        rng.bit_generator.state = state["rng"]
        buffer.load_state(state["buffer"])
        obs = restore_vector(envs, state["envs"])
        first_step = state["step"] + 1
    with log:
        for step in range(first_step, total_frames + 1):
            eps = epsilon_at(step, total_frames, args)
            if rng.random() < eps:
                action = np.array([rng.integers(n_actions)])
            else:
                action = q_network.greedy(torch.as_tensor(obs)).numpy()
            next_obs, reward, terminated, truncated, infos = envs.step(action)
            # With same-step autoreset the true last observation of an episode is in final_obs.
            real_next = next_obs.copy()
            if "final_obs" in infos and infos["_final_obs"][0]:
                real_next[0] = infos["final_obs"][0]
            buffer.add(obs[0], action[0], reward[0], real_next[0], float(terminated[0]))  # truncation is not a terminal state
            obs = next_obs
            for ep_return, ep_length in finished_episodes(infos):
                log.episode(step, ep_return, ep_length)

            if step > args.learning_starts and step % args.train_every == 0:
                b_obs, b_act, b_rew, b_next, b_done = buffer.sample(rng, args.batch_size)
                with torch.no_grad():
                    target_q = b_rew + args.gamma * (1.0 - b_done) * target(b_next).max(-1).values
                q = q_network(b_obs).gather(1, b_act[:, None]).squeeze(1)
                loss = F.smooth_l1_loss(q, target_q)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if step % 1000 == 0:
                    log.update(step, {"td_loss": loss.item(), "q_mean": q.mean().item(), "epsilon": eps})
            if step % 1000 == 0:
                log.tick(step)
            if step % args.target_every == 0:
                target.load_state_dict(q_network.state_dict())
            if log.checkpoint_due(step, step - 1):
                log.save(step, q_network, optimizer, {"target": target.state_dict(), "rng": rng.bit_generator.state,
                                                      "buffer": buffer.state(), "envs": vector_state(envs)})
    envs.close()
    return q_network
