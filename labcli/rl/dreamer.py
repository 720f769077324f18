"""DreamerV3 (Hafner et al. 2023) for discrete-action gymnasium envs, in one file.

The pieces the paper fixes across domains, each a small function or module tested exactly
(tests/lib/rl/test_dreamer.py):
- `symlog` / `symexp` squash inputs and regression targets;
- `two_hot` over 255 bins evenly spaced in symlog space (-20..20): reward and critic heads are
  softmax classifiers whose expectation, symexp'd, is the prediction (output weights zero-initialised);
- the RSSM's stochastic state is `groups` categoricals of `classes` classes, straight-through
  one-hot samples, each distribution mixed with 1 % uniform (`unimix`);
- `kl_balance`: 0.5 * max(1, KL(sg(post) || prior)) + 0.1 * max(1, KL(post || sg(prior))), in nats
  summed over the latent (1 free nat);
- `ReturnNorm`: actor advantages divided by max(1, S), S the EMA (rate 0.01) of the 5th-95th
  percentile range of imagined λ-returns;
- actor-critic in imagination (horizon 15, γ = 0.997, λ = 0.95), REINFORCE for discrete actions
  with entropy 3e-4, a critic regularised towards its slow EMA copy.

Observations are vectors (CartPole's 4 numbers, MiniGrid's 7x7x3 symbolic view flattened), so
one MLP encoder serves every env: the "one configuration" claim runs through unchanged settings.
Differences from the official JAX code: nn.GRUCell (not its LayerNorm GRU), zero initial state
(not a learned one), one env, the train ratio set by `DreamerArgs` (see `updates_due`).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from labcli.config import Section
from labcli.rl.common import make_env
from labcli.rl.loop import RunLog
from labcli.runs import seed_everything


class DreamerArgs(Section):
    """DreamerV3 hyperparameters: one set for every env (the `dreamer:` section)."""

    deter: int = Field(256, ge=8, description="GRU (deterministic) state size")
    units: int = Field(256, ge=8, description="hidden units of every MLP")
    groups: int = Field(16, ge=1, description="categorical latents")
    classes: int = Field(16, ge=2, description="classes per categorical latent")
    bins: int = Field(255, ge=3, description="two-hot bins of the reward and critic heads (symlog space -20..20)")
    batch_size: int = Field(16, ge=1, description="replayed sequences per update")
    seq_len: int = Field(64, ge=2, description="steps per replayed sequence")
    train_ratio: int = Field(64, ge=1, description="replayed steps per env step: updates = (env steps - prefill) * train_ratio / (batch_size * seq_len)")
    prefill: int = Field(1000, ge=0, description="random-action env steps before the first update")
    horizon: int = Field(15, ge=1, description="imagination horizon")
    gamma: float = Field(0.997, gt=0, le=1, description="discount (1 - 1/333)")
    lam: float = Field(0.95, ge=0, le=1, description="λ of the λ-returns")
    model_lr: float = Field(1e-4, gt=0, description="world model Adam lr (paper 1e-4)")
    actor_lr: float = Field(3e-5, gt=0, description="actor Adam lr (paper 3e-5)")
    critic_lr: float = Field(3e-5, gt=0, description="critic Adam lr (paper 3e-5)")
    entropy: float = Field(3e-4, ge=0, description="actor entropy scale η")
    unimix: float = Field(0.01, ge=0, lt=1, description="uniform mix of every categorical")
    free_nats: float = Field(1.0, ge=0, description="KL below this is not penalised")
    dyn_scale: float = Field(0.5, ge=0, description="β_dyn of KL(sg(post) || prior)")
    rep_scale: float = Field(0.1, ge=0, description="β_rep of KL(post || sg(prior))")
    slow_rate: float = Field(0.02, gt=0, le=1, description="EMA rate of the slow critic")
    return_decay: float = Field(0.99, ge=0, lt=1, description="EMA decay of the return percentiles")


# ---- the exact pieces -------------------------------------------------------------------------

def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def bins_of(n: int) -> torch.Tensor:
    return torch.linspace(-20.0, 20.0, n)


def two_hot(x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """x (any shape, already in symlog space) -> weights over bins (shape + [n]) on the two nearest
    bins, so that sum(weights * bins) == x for x inside the bins' range (clipped outside)."""
    x = x.clamp(bins[0], bins[-1])
    below = (torch.bucketize(x, bins, right=True) - 1).clamp(0, len(bins) - 2)
    lo, hi = bins[below], bins[below + 1]
    w_hi = ((x - lo) / (hi - lo)).clamp(0, 1)
    out = torch.zeros(*x.shape, len(bins), dtype=x.dtype, device=x.device)
    out.scatter_(-1, below[..., None], (1 - w_hi)[..., None])
    out.scatter_add_(-1, (below + 1)[..., None], w_hi[..., None])
    return out


def two_hot_loss(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a two-hot head against the two-hot code of symlog(target)."""
    return -(two_hot(symlog(target), bins) * F.log_softmax(logits, -1)).sum(-1)


def two_hot_mean(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """The head's prediction: symexp of the expected bin under its softmax."""
    return symexp((F.softmax(logits, -1) * bins).sum(-1))


def unimix_logits(raw: torch.Tensor, mix: float) -> torch.Tensor:
    """Log-probabilities of (1 - mix) * softmax(raw) + mix / K over the last axis."""
    probs = F.softmax(raw, -1)
    return torch.log((1 - mix) * probs + mix / raw.shape[-1])


def categorical_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of (..., groups, classes) log-probabilities, summed over groups and classes."""
    return (p_logits.exp() * (p_logits - q_logits)).sum((-1, -2))


def kl_balance(post: torch.Tensor, prior: torch.Tensor, free: float = 1.0, dyn: float = 0.5,
               rep: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, dyn KL, rep KL) per position: dyn trains the prior towards the posterior, rep the
    posterior (the encoder) towards the prior; each clipped below at `free` nats."""
    dyn_kl = categorical_kl(post.detach(), prior)
    rep_kl = categorical_kl(post, prior.detach())
    return dyn * dyn_kl.clamp(min=free) + rep * rep_kl.clamp(min=free), dyn_kl, rep_kl


class ReturnNorm:
    """S = max(1, EMA(Per(R, 95)) - EMA(Per(R, 5))): large returns are scaled down, small ones never up."""

    def __init__(self, decay: float = 0.99):
        self.decay, self.low, self.high = decay, 0.0, 0.0

    def update(self, returns: torch.Tensor) -> None:
        flat = returns.detach().flatten().float()
        lo, hi = torch.quantile(flat, 0.05).item(), torch.quantile(flat, 0.95).item()
        self.low = self.decay * self.low + (1 - self.decay) * lo
        self.high = self.decay * self.high + (1 - self.decay) * hi

    @property
    def scale(self) -> float:
        return max(1.0, self.high - self.low)


def lambda_returns(rewards, conts, values, gamma: float, lam: float) -> torch.Tensor:
    """R_t = r_{t+1} + γ c_{t+1} ((1 - λ) v_{t+1} + λ R_{t+1}), R_H = v_H; rewards/conts index
    1..H (shape [H, ...]), values 0..H ([H+1, ...]); returns R_0..R_{H-1}."""
    out, last = [], values[-1]
    for t in reversed(range(rewards.shape[0])):
        last = rewards[t] + gamma * conts[t] * ((1 - lam) * values[t + 1] + lam * last)
        out.append(last)
    return torch.stack(out[::-1])


def updates_due(env_steps: int, args: DreamerArgs) -> int:
    """Updates owed after `env_steps` env steps: the train ratio (replayed / env steps) counted from
    the end of prefill. The one place the ratio is applied, so no other default can override it."""
    return max(0, env_steps - args.prefill) * args.train_ratio // (args.batch_size * args.seq_len)


# ---- networks ---------------------------------------------------------------------------------

def mlp(inp: int, units: int, layers: int, out: int | None = None, zero_out: bool = False) -> nn.Sequential:
    """Linear -> LayerNorm -> SiLU blocks (the paper's MLPs), then an optional output layer."""
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(inp, units, bias=False), nn.LayerNorm(units), nn.SiLU()]
        inp = units
    if out is not None:
        head = nn.Linear(inp, out)
        if zero_out:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        mods.append(head)
    return nn.Sequential(*mods)


def sample_onehot(logits: torch.Tensor) -> torch.Tensor:
    """One-hot sample with straight-through gradients (through the probabilities)."""
    probs = logits.exp()
    gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp_min(1e-20)))  # Gumbel-max = a categorical sample
    onehot = F.one_hot((logits.detach() + gumbel).argmax(-1), probs.shape[-1]).to(probs.dtype)
    return onehot + probs - probs.detach()


class RSSM(nn.Module):
    def __init__(self, embed: int, n_actions: int, a: DreamerArgs):
        super().__init__()
        self.a, self.stoch = a, a.groups * a.classes
        self.img_in = mlp(self.stoch + n_actions, a.units, 1)
        self.gru = nn.GRUCell(a.units, a.deter)
        self.prior_net = mlp(a.deter, a.units, 1, self.stoch)
        self.post_net = mlp(a.deter + embed, a.units, 1, self.stoch)

    def initial(self, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(batch, self.a.deter, device=device), torch.zeros(batch, self.stoch, device=device)

    def logits(self, raw: torch.Tensor) -> torch.Tensor:
        return unimix_logits(raw.reshape(*raw.shape[:-1], self.a.groups, self.a.classes), self.a.unimix)

    def img_step(self, h, z, action):
        h = self.gru(self.img_in(torch.cat([z, action], -1)), h)
        prior = self.logits(self.prior_net(h))
        return h, sample_onehot(prior).flatten(-2), prior

    def obs_step(self, h, z, action, embed, is_first):
        keep = (1.0 - is_first)[:, None]
        h, _, prior = self.img_step(h * keep, z * keep, action * keep)
        post = self.logits(self.post_net(torch.cat([h, embed], -1)))
        return h, sample_onehot(post).flatten(-2), post, prior


class WorldModel(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int, a: DreamerArgs):
        super().__init__()
        self.encoder = mlp(obs_dim, a.units, 2)
        self.rssm = RSSM(a.units, n_actions, a)
        feat = a.deter + a.groups * a.classes
        self.decoder = mlp(feat, a.units, 2, obs_dim)
        self.reward = mlp(feat, a.units, 2, a.bins, zero_out=True)
        self.cont = mlp(feat, a.units, 2, 1)
        self.register_buffer("bins", bins_of(a.bins))
        self.a = a

    def embed(self, obs):
        return self.encoder(symlog(obs))

    def loss(self, batch: dict):
        """Sequence loss: symlog MSE reconstruction + two-hot reward + continue BCE + balanced KL."""
        obs, B, T = batch["obs"], *batch["obs"].shape[:2]
        embed = self.embed(obs)
        h, z = self.rssm.initial(B, obs.device)
        hs, zs, posts, priors = [], [], [], []
        for t in range(T):
            h, z, post, prior = self.rssm.obs_step(h, z, batch["prev_action"][:, t], embed[:, t], batch["is_first"][:, t])
            hs.append(h), zs.append(z), posts.append(post), priors.append(prior)
        h, z = torch.stack(hs, 1), torch.stack(zs, 1)
        feat = torch.cat([h, z], -1)
        recon = ((self.decoder(feat) - symlog(obs)) ** 2).sum(-1)
        reward = two_hot_loss(self.reward(feat), batch["reward"], self.bins)
        cont = F.binary_cross_entropy_with_logits(self.cont(feat).squeeze(-1), batch["cont"], reduction="none")
        kl, dyn_kl, rep_kl = kl_balance(torch.stack(posts, 1), torch.stack(priors, 1), self.a.free_nats,
                                        self.a.dyn_scale, self.a.rep_scale)
        loss = (recon + reward + cont + kl).mean()
        stats = {"recon": recon.mean().item(), "reward_loss": reward.mean().item(), "cont_loss": cont.mean().item(),
                 "dyn_kl": dyn_kl.mean().item(), "rep_kl": rep_kl.mean().item()}
        return loss, h.detach(), z.detach(), stats


class Dreamer(nn.Module):
    """World model, actor and critic (with its slow EMA copy), and the per-step acting state."""

    def __init__(self, obs_dim: int, n_actions: int, a: DreamerArgs):
        super().__init__()
        self.a, self.n_actions = a, n_actions
        self.wm = WorldModel(obs_dim, n_actions, a)
        feat = a.deter + a.groups * a.classes
        self.actor = mlp(feat, a.units, 2, n_actions)
        self.critic = mlp(feat, a.units, 2, a.bins, zero_out=True)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.norm = ReturnNorm(a.return_decay)

    def policy_logits(self, feat):
        return unimix_logits(self.actor(feat), self.a.unimix)

    @torch.no_grad()
    def act(self, state, obs: torch.Tensor, prev_action: torch.Tensor, is_first: torch.Tensor, greedy: bool = False):
        """One env step of the agent: update the posterior with obs, pick an action (one-hot)."""
        h, z = state if state is not None else self.wm.rssm.initial(obs.shape[0], obs.device)
        h, z, _, _ = self.wm.rssm.obs_step(h, z, prev_action, self.wm.embed(obs), is_first)
        logits = self.policy_logits(torch.cat([h, z], -1))
        action = F.one_hot(logits.argmax(-1), self.n_actions).float() if greedy else sample_onehot(logits).detach()
        return (h, z), action

    def imagine_losses(self, h, z, cont0):
        """Actor and critic losses over `horizon` imagined steps from every posterior state."""
        a, bins = self.a, self.wm.bins
        with torch.no_grad():  # REINFORCE: no gradient flows through the dynamics
            feats, actions = [torch.cat([h, z], -1)], []
            for _ in range(a.horizon):
                action = sample_onehot(self.policy_logits(feats[-1])).detach()
                h, z, _ = self.wm.rssm.img_step(h, z, action)
                feats.append(torch.cat([h, z], -1))
                actions.append(action)
            feats, actions = torch.stack(feats), torch.stack(actions)
            rewards = two_hot_mean(self.wm.reward(feats[1:]), bins)
            conts = torch.cat([cont0[None], (self.wm.cont(feats[1:]).squeeze(-1) > 0).float()])
            values = two_hot_mean(self.critic(feats), bins)
            returns = lambda_returns(rewards, conts[1:], values, a.gamma, a.lam)
            weight = torch.cumprod(a.gamma * conts, 0)[:-1] / a.gamma
            self.norm.update(returns)
            adv = (returns - values[:-1]) / self.norm.scale
            slow = two_hot_mean(self.slow_critic(feats[:-1]), bins)
        logits = self.policy_logits(feats[:-1])
        logp = (logits * actions).sum(-1)
        entropy = -(logits.exp() * logits).sum(-1)
        actor_loss = -(weight * (logp * adv + a.entropy * entropy)).mean()
        critic_logits = self.critic(feats[:-1])
        critic_loss = (weight * (two_hot_loss(critic_logits, returns, bins) + two_hot_loss(critic_logits, slow, bins))).mean()
        return actor_loss, critic_loss, {"entropy": entropy.mean().item(), "return_scale": self.norm.scale,
                                         "imagined_return": returns.mean().item()}

    @torch.no_grad()
    def update_slow_critic(self) -> None:
        for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters()):
            slow.lerp_(fast, self.a.slow_rate)


class Replay:
    """Every step as a row: obs, the action that led to it (one-hot, zero at an episode's first
    row), the reward received on arriving, cont (0 after termination), is_first."""

    def __init__(self, capacity: int, obs_dim: int, n_actions: int):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.prev_action = np.zeros((capacity, n_actions), np.float32)
        self.reward, self.cont, self.is_first = (np.zeros(capacity, np.float32) for _ in range(3))
        self.size = 0

    def add(self, obs, prev_action, reward: float, cont: float, is_first: bool) -> None:
        i = self.size
        self.obs[i], self.prev_action[i], self.reward[i], self.cont[i], self.is_first[i] = obs, prev_action, reward, cont, is_first
        self.size += 1

    def sample(self, batch: int, length: int, rng: np.random.Generator, device) -> dict:
        starts = rng.integers(0, self.size - length + 1, batch)
        index = starts[:, None] + np.arange(length)
        return {k: torch.as_tensor(getattr(self, k)[index], device=device)
                for k in ("obs", "prev_action", "reward", "cont", "is_first")}


def train(env_id: str, env_steps: int, seed: int, args: DreamerArgs, *, run=None, device="cpu",
          progress: bool = False) -> tuple[Dreamer, dict]:
    """Train for `env_steps` env steps; episodes and update statistics go to run's metrics.jsonl.
    Returns the agent and {"updates", "wall_s", "episodes": [{"step", "episode_return", "episode_length"}]}."""
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    env = make_env(env_id, seed)()
    obs_dim, n_actions = int(np.prod(env.observation_space.shape)), int(env.action_space.n)
    agent = Dreamer(obs_dim, n_actions, args).to(device)
    wm_opt = torch.optim.Adam(agent.wm.parameters(), lr=args.model_lr, eps=1e-8)
    actor_opt = torch.optim.Adam(agent.actor.parameters(), lr=args.actor_lr, eps=1e-5)
    critic_opt = torch.optim.Adam(agent.critic.parameters(), lr=args.critic_lr, eps=1e-5)
    replay = Replay(2 * env_steps + 2, obs_dim, n_actions)
    log = RunLog(run, env_steps, f"dreamerv3 {env_id}", progress=progress)
    start = time.perf_counter()

    obs, _ = env.reset(seed=seed)
    prev_action, reward, cont, is_first, state, updates = np.zeros(n_actions, np.float32), 0.0, 1.0, True, None, 0
    with log:
        for step in range(1, env_steps + 1):
            flat = np.asarray(obs, np.float32).reshape(-1)
            replay.add(flat, prev_action, reward, cont, is_first)
            state, action = agent.act(state, torch.as_tensor(flat[None], device=device),
                                      torch.as_tensor(prev_action[None], device=device),
                                      torch.tensor([float(is_first)], device=device))
            index = int(rng.integers(n_actions)) if step <= args.prefill else int(action.argmax())
            obs, reward, terminated, truncated, info = env.step(index)
            prev_action, reward, is_first = np.eye(n_actions, dtype=np.float32)[index], float(reward), False
            cont = 0.0 if terminated else 1.0
            if terminated or truncated:
                replay.add(np.asarray(obs, np.float32).reshape(-1), prev_action, reward, cont, False)
                log.episode(step, float(info["episode"]["r"]), int(info["episode"]["l"]))
                obs, _ = env.reset()
                prev_action, reward, cont, is_first, state = np.zeros(n_actions, np.float32), 0.0, 1.0, True, None
            while updates < updates_due(step, args) and replay.size >= args.seq_len:
                stats = update(agent, replay.sample(args.batch_size, args.seq_len, rng, device), wm_opt, actor_opt, critic_opt)
                updates += 1
                if updates % 25 == 0:
                    log.update(step, stats)
            if step % 500 == 0:
                log.tick(step)
    env.close()
    return agent, {"updates": updates, "wall_s": time.perf_counter() - start, "episodes": log.history}


def update(agent: Dreamer, batch: dict, wm_opt, actor_opt, critic_opt) -> dict:
    """One gradient step of the world model, then of actor and critic on imagined trajectories."""
    wm_loss, h, z, stats = agent.wm.loss(batch)
    wm_opt.zero_grad()
    wm_loss.backward()
    nn.utils.clip_grad_norm_(agent.wm.parameters(), 1000.0)
    wm_opt.step()
    actor_loss, critic_loss, ac_stats = agent.imagine_losses(h.flatten(0, 1), z.flatten(0, 1), batch["cont"].flatten())
    actor_opt.zero_grad()
    critic_opt.zero_grad()
    (actor_loss + critic_loss).backward()
    nn.utils.clip_grad_norm_(agent.actor.parameters(), 100.0)
    nn.utils.clip_grad_norm_(agent.critic.parameters(), 100.0)
    actor_opt.step()
    critic_opt.step()
    agent.update_slow_critic()
    return {"model_loss": wm_loss.item(), "actor_loss": actor_loss.item(), "critic_loss": critic_loss.item(), **stats, **ac_stats}


@torch.no_grad()
def evaluate(agent: Dreamer, env_id: str, episodes: int, seed: int, device="cpu") -> list[float]:
    """Returns of the trained policy (sampling its actions, as during training) on fresh episodes."""
    env = make_env(env_id, seed)()
    n_actions, returns = agent.n_actions, []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + 10_000 + episode)
        state, prev, first, done, total = None, torch.zeros(1, n_actions, device=device), 1.0, False, 0.0
        while not done:
            flat = torch.as_tensor(np.asarray(obs, np.float32).reshape(1, -1), device=device)
            state, prev = agent.act(state, flat, prev, torch.tensor([first], device=device))
            obs, reward, terminated, truncated, _ = env.step(int(prev.argmax()))
            total, first, done = total + float(reward), 0.0, terminated or truncated
        returns.append(total)
    env.close()
    return returns
