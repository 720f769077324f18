"""PPO for MiniGrid in one file, in the CleanRL spirit (clipped surrogate, GAE, minibatch epochs).

The defaults (PPOArgs, the one place they are declared) follow rl-starter-files' MiniGrid settings
and its CNN on the 7x7x3 symbolic view; `lab bench rl` gives the same section to SB3's PPO.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.distributions import Categorical

from labcli.config import Section
from labcli.rl.common import encoder_for, finished_episodes, make_vector_env
from labcli.rl.envstate import restore_vector, vector_state
from labcli.rl.loop import RunLog
from labcli.runs import seed_everything


class PPOArgs(Section):
    """PPO hyperparameters (the `ppo:` section of `lab simulate minigrid` and `lab bench rl`)."""

    num_envs: int = Field(16, ge=1, description="parallel envs (gymnasium SyncVectorEnv)")
    num_steps: int = Field(128, ge=1, description="rollout steps per env per update")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate")
    anneal_lr: bool = Field(False, description="decay the learning rate linearly to 0 over the run")
    gamma: float = Field(0.99, description="discount")
    gae_lambda: float = Field(0.95, description="GAE λ")
    minibatch_size: int = Field(256, ge=1, description="samples per gradient step")
    update_epochs: int = Field(4, ge=1, description="passes over each rollout")
    clip_coef: float = Field(0.2, description="PPO clip range")
    ent_coef: float = Field(0.01, description="entropy bonus")
    vf_coef: float = Field(0.5, description="value-loss weight")
    max_grad_norm: float = Field(0.5, description="gradient clipping")
    # Chosen on DoorKey-5x5 seeds 10-12, which no published table reports: both settings reach 0.9
    # on 3/3 seeds, without normalisation at a lower median frame count (34.5k vs 43.4k); a weak
    # margin, see docs/results/sims.md ("Advantage normalisation").
    norm_adv: bool = Field(False, description="normalise advantages per minibatch (CleanRL's default; off here, chosen on seeds 10-12, see docs/results/sims.md)")


class Agent(nn.Module):
    """Shared trunk (the CNN for MiniGrid images, an MLP for vector observations such as CartPole's);
    separate actor and critic heads (64 tanh units each). `encoder` replaces the trunk (any module
    with `out_dim` features, e.g. the BabyAI agents' views)."""

    def __init__(self, n_actions: int, obs_shape: tuple | None = None, encoder: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else encoder_for(obs_shape)
        width = getattr(self.encoder, "out_dim", 64)
        self.actor = nn.Sequential(nn.Linear(width, 64), nn.Tanh(), nn.Linear(64, n_actions))
        self.critic = nn.Sequential(nn.Linear(width, 64), nn.Tanh(), nn.Linear(64, 1))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.encoder(obs)).squeeze(-1)

    def act(self, obs: torch.Tensor, action: torch.Tensor | None = None):
        features = self.encoder(obs)
        dist = Categorical(logits=self.actor(features))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(features).squeeze(-1)

    @torch.no_grad()
    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(self.encoder(obs)).argmax(-1)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        return Categorical(logits=self.actor(self.encoder(obs))).sample()


def rollout_frames(total_frames: int, args: PPOArgs) -> int:
    """Frames PPO trains for: whole rollouts, rounded up as SB3 does (at least `total_frames`, at least one)."""
    batch_size = args.num_envs * args.num_steps
    return max(1, -(-total_frames // batch_size)) * batch_size


def train(env_id: str, total_frames: int, seed: int, args: PPOArgs, agent: Agent | None = None, *,
          run=None, checkpoint_every: int = 0, progress: bool = False, make_envs=None) -> Agent:
    """Train for at least `total_frames` env steps (all envs together), whole rollouts only.

    With a `run` (labcli.runs.Run), episodes and update statistics go to its metrics.jsonl, a
    checkpoint is written every `checkpoint_every` frames (rounded up to a whole rollout) and at the
    end, and run.resume_from continues exactly where that checkpoint left off (see labcli/rl/loop.py).
    `make_envs(num_envs, seed)` replaces the MiniGrid env (`env_id` then only names the run): any
    same-step-autoreset vector env with uint8 observations, with `agent` built for them.
    """
    seed_everything(seed)
    envs = make_envs(args.num_envs, seed) if make_envs else make_vector_env(env_id, args.num_envs, seed)
    n_actions = int(envs.single_action_space.n)
    agent = agent or Agent(n_actions, envs.single_observation_space.shape)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-8)
    batch_size = args.num_envs * args.num_steps
    num_updates = rollout_frames(total_frames, args) // batch_size

    obs_shape = envs.single_observation_space.shape
    obs_dtype = torch.from_numpy(np.zeros(0, envs.single_observation_space.dtype)).dtype  # uint8 images, float32 vectors
    obs_buf = torch.zeros((args.num_steps, args.num_envs, *obs_shape), dtype=obs_dtype)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long)
    logprobs, rewards, dones, values = (torch.zeros((args.num_steps, args.num_envs)) for _ in range(4))

    next_obs, _ = envs.reset(seed=seed)
    next_done = torch.zeros(args.num_envs)
    first_update = 1
    log = RunLog(run, num_updates * batch_size, f"ppo {env_id}", checkpoint_every, progress)
    state = log.resume(agent, optimizer)
    if state is not None:
        first_update = state["update"] + 1
        next_obs, next_done = restore_vector(envs, state["envs"]), state["next_done"]
    next_obs = torch.as_tensor(next_obs)
    frames = (first_update - 1) * batch_size
    with log:
        for update in range(first_update, num_updates + 1):
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (update - 1) / num_updates)
            start = time.perf_counter()
            for step in range(args.num_steps):
                frames += args.num_envs
                obs_buf[step], dones[step] = next_obs, next_done
                with torch.no_grad():
                    action, logprob, _, value = agent.act(next_obs)
                actions[step], logprobs[step], values[step] = action, logprob, value
                obs, reward, terminated, truncated, infos = envs.step(action.numpy())
                rewards[step] = torch.as_tensor(reward, dtype=torch.float32)
                next_obs = torch.as_tensor(obs)
                next_done = torch.as_tensor(np.logical_or(terminated, truncated), dtype=torch.float32)
                for ep_return, ep_length in finished_episodes(infos):
                    log.episode(frames, ep_return, ep_length)

            # Generalised advantage estimation, bootstrapping from the value of the last observation.
            with torch.no_grad():
                next_value = agent.value(next_obs)
                advantages = torch.zeros_like(rewards)
                last_gae = torch.zeros(args.num_envs)
                for t in reversed(range(args.num_steps)):
                    not_done = 1.0 - (next_done if t == args.num_steps - 1 else dones[t + 1])
                    following = next_value if t == args.num_steps - 1 else values[t + 1]
                    delta = rewards[t] + args.gamma * following * not_done - values[t]
                    last_gae = delta + args.gamma * args.gae_lambda * not_done * last_gae
                    advantages[t] = last_gae
                returns = advantages + values

            b_obs = obs_buf.reshape(-1, *obs_shape)
            b_actions, b_logprobs = actions.reshape(-1), logprobs.reshape(-1)
            b_adv, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
            clip_fracs = []
            for _ in range(args.update_epochs):
                order = torch.randperm(batch_size)
                for lo in range(0, batch_size, args.minibatch_size):
                    mb = order[lo: lo + args.minibatch_size]
                    _, new_logprob, entropy, new_value = agent.act(b_obs[mb], b_actions[mb])
                    ratio = (new_logprob - b_logprobs[mb]).exp()
                    adv = b_adv[mb]
                    if args.norm_adv:
                        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                    policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)).mean()
                    # Clipped value loss, as in the PPO reference implementation.
                    v_clipped = b_values[mb] + (new_value - b_values[mb]).clamp(-args.clip_coef, args.clip_coef)
                    value_loss = 0.5 * torch.max((new_value - b_returns[mb]) ** 2, (v_clipped - b_returns[mb]) ** 2).mean()
                    loss = policy_loss - args.ent_coef * entropy.mean() + args.vf_coef * value_loss
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()
                    clip_fracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())
            log.update(frames, {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                                "entropy": entropy.mean().item(), "clip_frac": float(np.mean(clip_fracs)),
                                "fps": batch_size / (time.perf_counter() - start)})
            if log.checkpoint_due(frames, frames - batch_size):
                log.save(frames, agent, optimizer, {"update": update, "next_done": next_done, "envs": vector_state(envs)})
    envs.close()
    return agent
