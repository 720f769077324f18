"""`lab bench rl`: lab's own PPO against Stable-Baselines3's PPO on the same MiniGrid env, frames and seeds.

Measured per run: frames until the mean return of the last 20 episodes reaches 0.9, the final
(last-20) training return, wall time and frames/s. Three implementations:
- lab: labcli/rl/ppo.py with rl-starter-files' settings (its CNN on the 7x7x3 view);
- sb3_matched: SB3 PPO with the same CNN, envs, rollout, minibatch, epochs, lr, entropy and
  clipping as lab, so the difference is the implementation;
- sb3_zoo: SB3 PPO with RL Zoo's MiniGrid settings (FlatObsWrapper, VecNormalize, MlpPolicy,
  8 envs x 128 steps, batch 64, 10 epochs, lr 2.5e-4, no entropy bonus).
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import Field

from labcli.config import RecipeConfig
from labcli.errors import UserError


class Config(RecipeConfig):
    env: str = Field("MiniGrid-DoorKey-5x5-v0", description="MiniGrid env id")
    frames: int = Field(80_000, description="env frames per run")
    seeds: list[int] = Field([0, 1, 2], description="one run per seed and implementation")
    implementations: list[Literal["lab", "sb3_matched", "sb3_zoo"]] = Field(
        ["lab", "sb3_matched", "sb3_zoo"], description="lab, sb3_matched (same network and settings as lab), sb3_zoo (RL Zoo's MiniGrid settings)")
    threshold: float = Field(0.9, description="return whose crossing (mean of last 20 episodes) is timed")


def run_lab_ppo(env_id: str, frames: int, seed: int, advance) -> list[dict]:
    from labcli.rl import ppo

    history = []
    ppo.train(env_id, frames, seed, ppo.PPOArgs(),
              on_episode=lambda f, r, n: history.append({"frames": f, "return": r, "length": n}),
              on_update=lambda f, _: advance(f))
    return history


def run_sb3_zoo(env_id: str, frames: int, seed: int, advance) -> list[dict]:
    from minigrid.wrappers import FlatObsWrapper
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    history: list[dict] = []
    env = VecNormalize(make_vec_env(env_id, n_envs=8, seed=seed, wrapper_class=FlatObsWrapper))
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=64, gae_lambda=0.95, gamma=0.99, n_epochs=10, ent_coef=0.0,
                learning_rate=2.5e-4, clip_range=0.2, seed=seed, device="cpu", verbose=0)
    model.learn(total_timesteps=frames, callback=sb3_recorder(history, advance))
    env.close()
    return history


def run_sb3_matched(env_id: str, frames: int, seed: int, advance) -> list[dict]:
    import torch
    from minigrid.wrappers import ImgObsWrapper
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    from labcli.rl.common import ImageEncoder
    from labcli.rl.ppo import PPOArgs

    class LabEncoder(BaseFeaturesExtractor):
        """lab's CNN; SB3 hands it channel-first (3, 7, 7) images, the encoder wants channel-last."""

        def __init__(self, space):
            super().__init__(space, features_dim=64)
            self.encoder = ImageEncoder()

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.encoder(obs.permute(0, 2, 3, 1))

    a = PPOArgs()
    history: list[dict] = []
    env = make_vec_env(env_id, n_envs=a.num_envs, seed=seed, wrapper_class=ImgObsWrapper)
    model = PPO("CnnPolicy", env, n_steps=a.num_steps, batch_size=a.minibatch_size, n_epochs=a.update_epochs,
                learning_rate=a.learning_rate, gamma=a.gamma, gae_lambda=a.gae_lambda, clip_range=a.clip_coef,
                clip_range_vf=a.clip_coef, ent_coef=a.ent_coef, vf_coef=a.vf_coef, max_grad_norm=a.max_grad_norm,
                normalize_advantage=a.norm_adv, seed=seed, device="cpu", verbose=0,
                policy_kwargs=dict(features_extractor_class=LabEncoder, normalize_images=False, activation_fn=torch.nn.Tanh,
                                   net_arch=dict(pi=[64], vf=[64]), optimizer_kwargs=dict(eps=1e-8)))
    model.learn(total_timesteps=frames, callback=sb3_recorder(history, advance))
    env.close()
    return history


def sb3_recorder(history: list[dict], advance):
    """An SB3 callback that records every finished episode (Monitor's info['episode'])."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Record(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    history.append({"frames": self.num_timesteps, "return": float(info["episode"]["r"]), "length": int(info["episode"]["l"])})
            if self.num_timesteps % 1024 == 0:
                advance(self.num_timesteps)
            return True

    return Record()


def run(cfg: Config, ctx) -> None:
    import torch

    from labcli.rl.common import check_env_id, frames_to
    from labcli.sims.report import progress_bar

    check_env_id(cfg.env)
    if cfg.frames < 2048 or not cfg.seeds or not cfg.implementations:
        raise UserError("bench rl needs frames >= 2048, at least one seed and one implementation", "e.g. --frames 80000 seeds=[0,1,2]")
    runners = {"lab": run_lab_ppo, "sb3_matched": run_sb3_matched, "sb3_zoo": run_sb3_zoo}
    rows, curves = [], {}
    for impl in cfg.implementations:
        for seed in cfg.seeds:
            start = time.perf_counter()
            with progress_bar(f"{impl} PPO seed {seed}", cfg.frames) as advance:
                history = runners[impl](cfg.env, cfg.frames, seed, advance)
            wall = time.perf_counter() - start
            last = [h["return"] for h in history[-20:]]
            row = {"implementation": impl, "seed": seed, "frames": cfg.frames, "episodes": len(history),
                   "frames_to_threshold": frames_to(cfg.threshold, history), "final_return": float(np.mean(last)) if last else None,
                   "wall_time_s": wall, "frames_per_s": cfg.frames / wall}
            rows.append(row)
            curves[(impl, seed)] = history
            ctx.log(**row)
            print(f"{impl} seed {seed}: frames to {cfg.threshold}: {row['frames_to_threshold']}, final return {row['final_return']:.3f}, {wall:.0f} s")
    table = aggregate(rows, cfg)
    hardware = hardware_line(torch.get_num_threads())
    plot = plot_curves(ctx, curves, cfg)
    ctx.write_summary({"env": cfg.env, "frames": cfg.frames, "seeds": cfg.seeds, "threshold": cfg.threshold,
                       "hardware": hardware, "runs": rows, "table": table})
    ctx.write_report(bench_report(cfg, rows, table, hardware, plot))
    print(f"run folder: {ctx.dir}")


def aggregate(rows: list[dict], cfg: Config) -> list[dict]:
    out = []
    for impl in cfg.implementations:
        mine = [r for r in rows if r["implementation"] == impl]
        reached = [r["frames_to_threshold"] for r in mine if r["frames_to_threshold"] is not None]
        out.append({
            "implementation": impl, "runs": len(mine), "reached": len(reached),
            "frames_to_threshold_median": float(np.median(reached)) if reached else None,
            "final_return_mean": float(np.mean([r["final_return"] for r in mine])),
            "wall_time_s_mean": float(np.mean([r["wall_time_s"] for r in mine])),
            "frames_per_s_mean": float(np.mean([r["frames_per_s"] for r in mine])),
        })
    base = next((t for t in out if t["implementation"].startswith("sb3")), None)
    for t in out:
        t["baseline"] = base["implementation"] if base else None
        t["wall_time_delta_pct_vs_sb3"] = 100.0 * (t["wall_time_s_mean"] / base["wall_time_s_mean"] - 1.0) if base else None
    return out


def hardware_line(threads: int) -> str:
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch threads {threads}, CPU only"


def plot_curves(ctx, curves: dict, cfg: Config) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labcli.sims.report import save_figure

    fig, ax = plt.subplots(figsize=(7, 4))
    colours = {"lab": "tab:blue", "sb3_matched": "tab:orange", "sb3_zoo": "tab:green"}
    for (impl, seed), history in curves.items():
        if len(history) < 20:
            continue
        frames = np.array([h["frames"] for h in history])
        smooth = np.convolve([h["return"] for h in history], np.ones(20) / 20, mode="valid")
        ax.plot(frames[19:], smooth, color=colours[impl], alpha=0.8, label=f"{impl} PPO" if seed == cfg.seeds[0] else None)
    ax.axhline(cfg.threshold, color="k", ls=":", lw=1)
    ax.set_xlabel("frames")
    ax.set_ylabel("return (mean of last 20 episodes)")
    ax.set_title(f"PPO on {cfg.env}, seeds {cfg.seeds}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, ctx.path("bench_rl.png"))
    plt.close(fig)
    return "bench_rl.png"


def bench_report(cfg: Config, rows: list[dict], table: list[dict], hardware: str, plot: str) -> str:
    def f(x, spec=".3f"):
        return "-" if x is None else format(x, spec)

    lines = [f"# bench rl: PPO on {cfg.env}, {cfg.frames} frames, seeds {cfg.seeds}", "", f"Hardware: {hardware}.", "",
             f"| implementation | runs reaching {cfg.threshold} | median frames to {cfg.threshold} | final return (mean) | wall time (s) | Δ wall vs {table[0]['baseline'] or 'SB3'} | frames/s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for t in table:
        delta = "-" if t["wall_time_delta_pct_vs_sb3"] is None else f"{t['wall_time_delta_pct_vs_sb3']:+.0f} %"
        lines.append(f"| {t['implementation']} | {t['reached']}/{t['runs']} | {f(t['frames_to_threshold_median'], '.0f')} | "
                     f"{f(t['final_return_mean'])} | {t['wall_time_s_mean']:.0f} | {delta} | {t['frames_per_s_mean']:.0f} |")
    lines += ["", "| implementation | seed | frames to threshold | final return | episodes | wall time (s) |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['implementation']} | {r['seed']} | {r['frames_to_threshold'] or '-'} | {f(r['final_return'])} | {r['episodes']} | {r['wall_time_s']:.0f} |" for r in rows]
    lines += ["", f"![learning curves]({plot})", "",
              "lab: labcli/rl/ppo.py with rl-starter-files settings (16 envs x 128 steps, minibatch 256, 4 epochs, lr 1e-3, "
              "entropy 0.01, CNN on the 7x7x3 view). sb3_matched: SB3 PPO with the same CNN and settings. sb3_zoo: SB3 PPO "
              "MlpPolicy with RL Zoo's MiniGrid settings (FlatObsWrapper, VecNormalize, 8 envs x 128 steps, batch 64, "
              "10 epochs, lr 2.5e-4, no entropy bonus)."]
    return "\n".join(lines) + "\n"
