"""`lab simulate minigrid --agent ppo|dqn --env ID --frames N`: train, save, load and film RL agents.

The agents are this package's own single-file PPO (labcli/rl/ppo.py) and DQN (labcli/rl/dqn.py).
Every finished episode goes to metrics.jsonl; the run folder gets agent.pt, learning.png,
summary.json, report.md and, with --render, episode.gif of one greedy episode.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.rl.dqn import DQNArgs
from labcli.rl.ppo import PPOArgs

RESUMABLE = True  # --resume continues from the newest checkpoint


class Config(RecipeConfig):
    agent: Literal["ppo", "dqn"] = Field("ppo", description="ppo or dqn (this package's own single-file agents)")
    env: str = Field("MiniGrid-DoorKey-5x5-v0", description="a MiniGrid env id, e.g. MiniGrid-Empty-5x5-v0")
    frames: int = Field(80_000, description="env frames to train for (0 with --load: only evaluate)")
    load: str | None = Field(None, description="an agent.pt (or its run folder) to start from")
    eval_episodes: int = Field(20, description="evaluation episodes after training")
    eval_deterministic: bool = Field(False, description="PPO: evaluate the most likely action (default: sample the policy, as RL Zoo does on MiniGrid); DQN is always greedy")
    render: bool = Field(False, description="write episode.gif of one evaluation episode")
    checkpoint_every: int = Field(10, description="PPO: write a resumable checkpoint every N updates (continue with --resume auto)")
    ppo: PPOArgs = Field(default_factory=PPOArgs)
    dqn: DQNArgs = Field(default_factory=DQNArgs)


def run(cfg: Config, ctx) -> None:
    import torch

    from labcli.rl import dqn, ppo
    from labcli.rl.common import (
        check_env_id,
        evaluate,
        frames_to,
        load_checkpoint,
        save_agent,
        save_gif,
    )
    from labcli.runs import seed_everything
    from labcli.sims.report import progress_bar

    check_env_id(cfg.env)
    if cfg.frames < 0 or (cfg.frames == 0 and not cfg.load):
        raise UserError(f"--frames {cfg.frames}: nothing to do", "train with --frames 80000, or evaluate a saved agent with --load RUN --frames 0")
    network = None
    n_actions = 7  # every MiniGrid env has the same 7 actions
    if cfg.load:
        ckpt = load_checkpoint(cfg.load)
        if ckpt["algo"] != cfg.agent:
            raise UserError(f"--load holds a {ckpt['algo']} agent but --agent is {cfg.agent}", f"pass --agent {ckpt['algo']}")
        network = ppo.Agent(ckpt["n_actions"]) if cfg.agent == "ppo" else dqn.QNetwork(ckpt["n_actions"])
        network.load_state_dict(ckpt["state_dict"])
    history: list[dict] = []
    resume_state = None
    if ctx.resume_from is not None:
        if cfg.agent != "ppo":
            raise UserError("--resume is supported for --agent ppo", "for dqn, start a new run from the saved agent with --load RUN")
        resume_state = torch.load(ctx.resume_from / "state.pt", map_location="cpu", weights_only=True)
        history = [{"frames": r["frames"], "return": r["episode_return"], "length": r["episode_length"]}
                   for r in ctx.metrics() if "episode_return" in r and r["frames"] <= resume_state["frames"]]
        print(f"resuming from {ctx.resume_from} (frame {resume_state['frames']})")

    def on_episode(frames: int, ep_return: float, length: int) -> None:
        history.append({"frames": frames, "return": ep_return, "length": length})
        ctx.log(frames=frames, episode_return=round(ep_return, 4), episode_length=length)

    import time

    start = time.perf_counter()
    if cfg.frames:
        with progress_bar(f"{cfg.agent} {cfg.env}", cfg.frames) as advance:
            def on_update(frames: int, stats: dict) -> None:
                advance(frames)
                ctx.log(frames=frames, **{k: round(v, 5) for k, v in stats.items()})

            if cfg.agent == "ppo":
                args = cfg.ppo
                if args.minibatch_size > args.num_envs * args.num_steps:
                    raise UserError(f"ppo.minibatch_size {args.minibatch_size} exceeds the rollout ({args.num_envs}x{args.num_steps})", "lower ppo.minibatch_size")
                network = ppo.train(cfg.env, cfg.frames, cfg.seed, args, network, on_episode, on_update,
                                    resume=resume_state, checkpoint=lambda state: save_checkpoint(ctx.dir, state),
                                    checkpoint_every=max(1, cfg.checkpoint_every))
            else:
                network = dqn.train(cfg.env, cfg.frames, cfg.seed, cfg.dqn, network, on_episode, on_update)
    train_s = time.perf_counter() - start
    network.eval()
    seed_everything(cfg.seed)
    frames_out = [] if cfg.render else None
    sampled = cfg.agent == "ppo" and not cfg.eval_deterministic
    policy = network.sample if sampled else network.greedy
    returns = evaluate(policy, cfg.env, max(1, cfg.eval_episodes), cfg.seed, frames_out)
    save_agent(ctx.path("agent.pt"), cfg.agent, cfg.env, network, n_actions)
    if frames_out:
        save_gif(ctx.path("episode.gif"), frames_out)

    recent = [h["return"] for h in history[-20:]]
    summary = {
        "agent": cfg.agent, "env": cfg.env, "frames": cfg.frames, "seed": cfg.seed, "episodes": len(history),
        "train_return_last20": float(np.mean(recent)) if recent else None,
        "frames_to_return_0.9": frames_to(0.9, history),
        "eval_policy": "sampled" if sampled else "greedy", "eval_return_mean": float(np.mean(returns)), "eval_return_std": float(np.std(returns)), "eval_episodes": len(returns),
        "wall_time_s": train_s, "fps": cfg.frames / train_s if train_s > 0 and cfg.frames else None,
        "threads": torch.get_num_threads(), "loaded_from": cfg.load,
    }
    plot = plot_learning(ctx, history, cfg) if history else None
    ctx.write_summary(summary)
    ctx.write_report(minigrid_report(summary, plot, bool(frames_out)))
    print(f"{cfg.agent} on {cfg.env}: {summary['eval_policy']} return {summary['eval_return_mean']:.3f} over {len(returns)} episodes, "
          f"last-20 training return {summary['train_return_last20']}, frames to 0.9: {summary['frames_to_return_0.9']}")
    print(f"run folder: {ctx.dir}")


def save_checkpoint(run_dir, state: dict) -> None:
    """checkpoints/step-NNNNNNNN/{state.pt, COMPLETE}; only the newest complete one is kept."""
    import shutil

    import torch

    from labcli import runs

    folder = run_dir / "checkpoints" / f"step-{state['frames']:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / "state.pt")
    runs.write_text(folder / "COMPLETE", "")
    for old in (run_dir / "checkpoints").glob("step-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)


def plot_learning(ctx, history: list[dict], cfg: Config) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labcli.sims.report import save_figure

    frames = np.array([h["frames"] for h in history])
    returns = np.array([h["return"] for h in history])
    smooth = np.convolve(returns, np.ones(20) / 20, mode="valid") if len(returns) >= 20 else returns
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(frames, returns, ".", alpha=0.25, label="episode return")
    ax.plot(frames[len(frames) - len(smooth):], smooth, label="mean of last 20")
    ax.axhline(0.9, color="k", ls=":", lw=1)
    ax.set_xlabel("frames")
    ax.set_ylabel("return")
    ax.set_title(f"{cfg.agent} on {cfg.env}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, ctx.path("learning.png"))
    plt.close(fig)
    return "learning.png"


def minigrid_report(summary: dict, plot: str | None, gif: bool) -> str:
    lines = [f"# simulate minigrid: {summary['agent']} on {summary['env']}", "",
             f"| frames | episodes | last-20 training return | frames to return 0.9 | eval return ({summary['eval_policy']}) | wall time (s) | frames/s |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             f"| {summary['frames']} | {summary['episodes']} | {summary['train_return_last20']} | {summary['frames_to_return_0.9']} | "
             f"{summary['eval_return_mean']:.3f} ± {summary['eval_return_std']:.3f} | {summary['wall_time_s']:.1f} | {summary['fps'] and round(summary['fps'])} |", ""]
    if plot:
        lines.append(f"![learning curve]({plot})")
    if gif:
        lines.append("\n![an evaluation episode](episode.gif)")
    lines.append("\nAgent: `agent.pt` (load with `--load RUN_FOLDER`).")
    return "\n".join(lines) + "\n"
