"""`lab simulate minigrid --agent ppo|dqn --env ID --frames N`: train, save, load and film RL agents.

The agents are this package's own single-file PPO (labcli/rl/ppo.py) and DQN (labcli/rl/dqn.py).
Every finished episode and every update's statistics go to metrics.jsonl (`step` = env frames);
the run folder gets agent.pt, learning.png, summary.json, report.md and, with --render,
episode.gif of one evaluation episode. Checkpoints (every `checkpoint_every` frames) go through
the engine's checkpoint module; `--resume auto` continues a killed run exactly where its last
checkpoint left off.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.rl.dqn import DQNArgs
from labcli.rl.ppo import PPOArgs

RESUMABLE = True  # --resume continues from the newest checkpoint, for ppo and dqn


class Config(RecipeConfig):
    agent: Literal["ppo", "dqn"] = Field("ppo", description="ppo or dqn (this package's own single-file agents)")
    env: str = Field("MiniGrid-DoorKey-5x5-v0", description="a MiniGrid env id, e.g. MiniGrid-Empty-5x5-v0")
    frames: int = Field(80_000, description="env frames to train for (0 with --load: only evaluate); PPO rounds up to whole rollouts")
    load: str | None = Field(None, description="an agent.pt (or its run folder) to start from")
    eval_episodes: int = Field(20, ge=1, description="evaluation episodes after training")
    eval_deterministic: bool = Field(False, description="PPO: evaluate the most likely action (default: sample the policy, as RL Zoo does on MiniGrid); DQN is always greedy")
    render: bool = Field(False, description="write episode.gif of one evaluation episode")
    checkpoint_every: int = Field(20_480, ge=0, description="env frames between resumable checkpoints (PPO: at the next whole rollout; 0: only at the end); continue with --resume auto")
    threshold: float = Field(0.9, description="return whose crossing (mean of the last 20 training episodes) is reported as frames_to_threshold")
    ppo: PPOArgs = Field(default_factory=PPOArgs)
    dqn: DQNArgs = Field(default_factory=DQNArgs)


def validate(cfg: Config) -> None:
    """Bad input as one UserError, before anything is written."""
    from labcli.rl.common import check_env_id

    check_env_id(cfg.env)
    if cfg.frames < 0 or (cfg.frames == 0 and not cfg.load):
        raise UserError(f"--frames {cfg.frames}: nothing to do", "train with --frames 80000, or evaluate a saved agent with --load RUN --frames 0")
    if cfg.agent == "ppo" and cfg.ppo.minibatch_size > cfg.ppo.num_envs * cfg.ppo.num_steps:
        raise UserError(f"ppo.minibatch_size {cfg.ppo.minibatch_size} exceeds the rollout ({cfg.ppo.num_envs}x{cfg.ppo.num_steps})", "lower ppo.minibatch_size")


def check(cfg: Config) -> None:
    """What `run` would refuse (`lab check` reports the UserError raised)."""
    validate(cfg)


def plan(cfg: Config) -> str:
    """For `lab check`: what the run will do."""
    from labcli.rl.ppo import rollout_frames

    if cfg.agent == "ppo":
        a = cfg.ppo
        frames = rollout_frames(cfg.frames, a) if cfg.frames else 0
        train = f"{frames:,} frames ({frames // (a.num_envs * a.num_steps)} rollouts of {a.num_envs} envs x {a.num_steps} steps)"
    else:
        train = f"{cfg.frames:,} frames (one env, replay buffer {cfg.dqn.buffer_size:,})"
    start = f"from {cfg.load}, " if cfg.load else ""
    ckpt = f"checkpoints every {cfg.checkpoint_every:,} frames" if cfg.checkpoint_every else "a checkpoint at the end"
    return f"{cfg.agent} on {cfg.env}: {start}{train}, {ckpt}, then {cfg.eval_episodes} evaluation episodes"


def run(cfg: Config, ctx) -> None:
    import numpy as np
    import torch

    from labcli.rl import dqn, ppo
    from labcli.rl.common import episodes, evaluate, frames_to, load_agent, plot_returns, recent_return, save_agent, save_gif
    from labcli.runs import seed_everything

    validate(cfg)
    n_actions = 7  # every MiniGrid env has the same 7 actions
    network = None  # built inside train() from the seed, unless loaded
    if cfg.load:
        saved = load_agent(cfg.load)
        if saved["algo"] != cfg.agent:
            raise UserError(f"--load holds a {saved['algo']} agent but --agent is {cfg.agent}", f"pass --agent {saved['algo']}")
        network = ppo.Agent(n_actions) if cfg.agent == "ppo" else dqn.QNetwork(n_actions)
        network.load_state_dict(saved["state_dict"])
    if ctx.resume_from is not None:
        print(f"resuming from {ctx.resume_from}")

    if cfg.frames:
        train = ppo.train if cfg.agent == "ppo" else dqn.train
        args = cfg.ppo if cfg.agent == "ppo" else cfg.dqn
        network = train(cfg.env, cfg.frames, cfg.seed, args, network, run=ctx, checkpoint_every=cfg.checkpoint_every, progress=True)
    network.eval()
    seed_everything(cfg.seed)
    gif_frames = [] if cfg.render else None
    sampled = cfg.agent == "ppo" and not cfg.eval_deterministic
    returns = evaluate(network.sample if sampled else network.greedy, cfg.env, cfg.eval_episodes, cfg.seed, gif_frames)
    save_agent(ctx.path("agent.pt"), cfg.agent, cfg.env, network, n_actions)
    if gif_frames:
        save_gif(ctx.path("episode.gif"), gif_frames)

    history = episodes(ctx.metrics()) if cfg.frames else []
    trained = ppo.rollout_frames(cfg.frames, cfg.ppo) if cfg.agent == "ppo" and cfg.frames else cfg.frames
    summary = {
        "agent": cfg.agent, "env": cfg.env, "frames": cfg.frames, "frames_trained": trained, "seed": cfg.seed, "episodes": len(history),
        "train_return_last20": recent_return(history), "threshold": cfg.threshold,
        "frames_to_threshold": frames_to(cfg.threshold, history),
        "eval_policy": "sampled" if sampled else "greedy", "eval_episodes": len(returns),
        "eval_return_mean": float(np.mean(returns)), "eval_return_std": float(np.std(returns)),
        "resumed_from": str(ctx.resume_from) if ctx.resume_from else None,
        "threads": torch.get_num_threads(), "loaded_from": cfg.load,
    }
    if history:
        plot_returns([(cfg.agent, history)], ctx.path("learning.png"), f"{cfg.agent} on {cfg.env}", cfg.threshold, dots=True)
    ctx.write_summary(summary)
    ctx.write_report(report(summary, bool(history), bool(gif_frames)))
    last20 = "-" if summary["train_return_last20"] is None else f"{summary['train_return_last20']:.3f}"
    print(f"{cfg.agent} on {cfg.env}: {summary['eval_policy']} return {summary['eval_return_mean']:.3f} ± {summary['eval_return_std']:.3f} "
          f"over {len(returns)} episodes; last-20 training return {last20}, frames to {cfg.threshold}: "
          f"{summary['frames_to_threshold'] or 'not reached'} ({trained} frames trained)")


def report(summary: dict, plot: bool, gif: bool) -> str:
    from labcli.eval.tables import markdown_table

    row = {"frames": summary["frames"], "episodes": summary["episodes"], "last-20 training return": summary["train_return_last20"],
           f"frames to return {summary['threshold']}": summary["frames_to_threshold"],
           f"eval return ({summary['eval_policy']}, {summary['eval_episodes']} episodes)": f"{summary['eval_return_mean']:.3f} ± {summary['eval_return_std']:.3f}"}
    lines = [f"# simulate minigrid: {summary['agent']} on {summary['env']}", "", markdown_table([row])]
    if summary["resumed_from"]:
        lines.append(f"Resumed from `{summary['resumed_from']}`.\n")
    if plot:
        lines.append("![learning curve](learning.png)")
    if gif:
        lines.append("\n![an evaluation episode](episode.gif)")
    lines.append("\nAgent: `agent.pt` (load with `--load RUN_FOLDER`).")
    return "\n".join(lines) + "\n"
