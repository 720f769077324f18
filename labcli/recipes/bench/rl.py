"""`lab bench rl`: lab's own PPO against Stable-Baselines3's PPO on the same MiniGrid env, frames and seeds.

Measured per cell (one implementation, one seed): frames until the mean return of the last 20
episodes reaches the threshold, the final (last-20) training return, wall time and frames/s.
Implementations:
- lab: labcli/rl/ppo.py with the `ppo:` settings (rl-starter-files' MiniGrid settings and CNN);
- sb3_matched: SB3 PPO with the same CNN, envs, rollout, minibatch, epochs, lr, entropy, clipping
  and advantage normalisation (the same `ppo:` section), so the difference is the implementation;
- sb3_zoo: SB3 PPO with RL Zoo's MiniGrid settings (ZOO below; not in the default list: ~95 s a seed).
Each cell is a sub-run (RUN/<impl>-seed<S>/: its episodes in metrics.jsonl, its row in
summary.json). Finished cells are kept; a killed bench continues with `--resume auto` and runs only
the missing cells.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Literal

import numpy as np
from pydantic import Field

from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.rl.ppo import PPOArgs

RESUMABLE = True  # --resume auto keeps the finished cells and runs the rest

Implementation = Literal["lab", "sb3_matched", "sb3_zoo"]

# RL Zoo's hyperparameters for MiniGrid (rl-baselines3-zoo hyperparams/ppo.yml, MiniGrid-*), with
# its FlatObsWrapper, VecNormalize and MlpPolicy.
ZOO = {"n_envs": 8, "n_steps": 128, "batch_size": 64, "n_epochs": 10, "learning_rate": 2.5e-4, "ent_coef": 0.0,
       "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2}

# Wall seconds per cell of 80k frames on the quiet 2-core Xeon of docs/results/sims.md (LAB_THREADS=1):
# the old default (these three x 3 seeds) took ~510 s there, sb3_zoo ~93 s a seed. Only for the
# up-front estimate, which scales them by --frames; under load (1-min average 7-9) cells took 2x
# (lab, sb3_matched) to 5x (sb3_zoo) longer.
SECONDS_PER_80K = {"lab": 40, "sb3_matched": 40, "sb3_zoo": 95}


class Config(RecipeConfig):
    env: str = Field("MiniGrid-DoorKey-5x5-v0", description="MiniGrid env id")
    frames: int = Field(80_000, ge=2048, description="env frames per cell (rounded up to whole rollouts, as SB3 does)")
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="one cell per seed and implementation")
    implementations: list[Implementation] = Field(["lab", "sb3_matched"], min_length=1,
                                                  description="lab, sb3_matched (same network and settings as lab), sb3_zoo (RL Zoo's MiniGrid settings)")
    threshold: float = Field(0.9, description="return whose crossing (mean of the last 20 episodes) is timed")
    ppo: PPOArgs = Field(default_factory=PPOArgs, description="lab's and sb3_matched's PPO settings")


def run_lab(cfg: Config, seed: int, cell) -> None:
    from labcli.rl import ppo

    ppo.train(cfg.env, cfg.frames, seed, cfg.ppo, run=cell, progress=True)


def run_sb3_zoo(cfg: Config, seed: int, cell) -> None:
    from minigrid.wrappers import FlatObsWrapper
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    z = ZOO
    env = VecNormalize(make_vec_env(cfg.env, n_envs=z["n_envs"], seed=seed, wrapper_class=FlatObsWrapper))
    model = PPO("MlpPolicy", env, n_steps=z["n_steps"], batch_size=z["batch_size"], gae_lambda=z["gae_lambda"], gamma=z["gamma"],
                n_epochs=z["n_epochs"], ent_coef=z["ent_coef"], learning_rate=z["learning_rate"], clip_range=z["clip_range"],
                seed=seed, device="cpu", verbose=0)
    learn(model, cfg, cell, "sb3_zoo")
    env.close()


def run_sb3_matched(cfg: Config, seed: int, cell) -> None:
    import torch
    from minigrid.wrappers import ImgObsWrapper
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    from labcli.rl.common import ImageEncoder

    class LabEncoder(BaseFeaturesExtractor):
        """lab's CNN; SB3 hands it channel-first (3, 7, 7) images, the encoder wants channel-last."""

        def __init__(self, space):
            super().__init__(space, features_dim=64)
            self.encoder = ImageEncoder()

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.encoder(obs.permute(0, 2, 3, 1))

    a = cfg.ppo
    # SB3 sets the rate from the remaining progress (1 -> 0) before each update: the same linear decay.
    lr = (lambda remaining: a.learning_rate * remaining) if a.anneal_lr else a.learning_rate
    env = make_vec_env(cfg.env, n_envs=a.num_envs, seed=seed, wrapper_class=ImgObsWrapper)
    model = PPO("CnnPolicy", env, n_steps=a.num_steps, batch_size=a.minibatch_size, n_epochs=a.update_epochs,
                learning_rate=lr, gamma=a.gamma, gae_lambda=a.gae_lambda, clip_range=a.clip_coef,
                clip_range_vf=a.clip_coef, ent_coef=a.ent_coef, vf_coef=a.vf_coef, max_grad_norm=a.max_grad_norm,
                normalize_advantage=a.norm_adv, seed=seed, device="cpu", verbose=0,
                policy_kwargs=dict(features_extractor_class=LabEncoder, normalize_images=False, activation_fn=torch.nn.Tanh,
                                   net_arch=dict(pi=[64], vf=[64]), optimizer_kwargs=dict(eps=1e-8)))
    learn(model, cfg, cell, "sb3_matched")
    env.close()


def learn(model, cfg: Config, cell, label: str) -> None:
    """model.learn, logging every finished episode (Monitor's info['episode']) as lab's loop does."""
    from stable_baselines3.common.callbacks import BaseCallback

    from labcli.rl.common import progress_bar

    class Record(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    cell.log(step=self.num_timesteps, episode_return=round(float(info["episode"]["r"]), 4),
                             episode_length=int(info["episode"]["l"]))
            if self.num_timesteps % 1024 < model.n_envs:
                bar.advance(self.num_timesteps, None)
            return True

    with progress_bar(f"{label} {cfg.env}", cfg.frames) as bar:
        model.learn(total_timesteps=cfg.frames, callback=Record())


RUNNERS = {"lab": run_lab, "sb3_matched": run_sb3_matched, "sb3_zoo": run_sb3_zoo}


def validate(cfg: Config) -> None:
    from labcli.rl.common import check_env_id

    check_env_id(cfg.env)
    if len(set(cfg.seeds)) != len(cfg.seeds) or len(set(cfg.implementations)) != len(cfg.implementations):
        raise UserError("bench rl: a seed or an implementation is listed twice", "e.g. seeds=[0,1,2] implementations=[lab,sb3_matched]")


def check(cfg: Config) -> None:
    """What `run` would refuse (`lab check` reports the UserError raised)."""
    validate(cfg)


def plan(cfg: Config, todo: list | None = None) -> str:
    """The cells and how long they take (for `lab check`, and the run's first line)."""
    todo = [(impl, seed) for impl in cfg.implementations for seed in cfg.seeds] if todo is None else todo
    minutes = sum(SECONDS_PER_80K[impl] for impl, _ in todo) * cfg.frames / 80_000 / 60
    took = f"about {minutes:.0f} min" if minutes >= 1 else "under a minute"
    return (f"{len(todo)} cells to run ({', '.join(cfg.implementations)} x seeds {cfg.seeds}, {cfg.frames:,} frames each): "
            f"{took} on a quiet 2-core CPU, more under load")


def run(cfg: Config, ctx) -> None:
    from labcli.eval.measure import hardware_line
    from labcli.eval.tables import print_table

    validate(cfg)
    cells = [(impl, seed) for impl in cfg.implementations for seed in cfg.seeds]
    settings = cell_settings(cfg)
    done = sum(ctx.kept(cell_name(*cell), settings) is not None for cell in cells)
    todo = [c for c in cells if ctx.kept(cell_name(*c), settings) is None]
    kept = f"{done} kept from {ctx.root}; " if ctx.resume_from else ""
    print(f"bench rl: {kept}{plan(cfg, todo)}. A killed bench continues with --resume auto.", flush=True)
    rows, load = [], [os.getloadavg()[0]]

    def run_cell(impl: str, seed: int) -> dict:
        shutil.rmtree(ctx.root / cell_name(impl, seed), ignore_errors=True)  # a half-done cell starts over
        cell = ctx.sub(cell_name(impl, seed))
        start = time.perf_counter()
        RUNNERS[impl](cfg, seed, cell)
        row = cell_row(cfg, impl, seed, cell, time.perf_counter() - start)
        cell.write_summary(row)
        load.append(os.getloadavg()[0])
        print(f"{impl} seed {seed}: frames to {cfg.threshold}: {row['frames_to_threshold'] or 'not reached'}, "
              f"final return {row['final_return']}, {row['wall_time_s']:.0f} s")
        return row

    for impl, seed in cells:
        rows.append(ctx.cell(cell_name(impl, seed), lambda: run_cell(impl, seed), settings))
    table = aggregate(rows, cfg)
    hardware = hardware_line()
    load_range = [round(min(load), 2), round(max(load), 2)]
    plot = plot_cells(ctx, cfg, cells)
    ctx.write_summary({"env": cfg.env, "frames": cfg.frames, "seeds": cfg.seeds, "threshold": cfg.threshold,
                       "implementations": cfg.implementations, "ppo": cfg.ppo.model_dump(), "zoo": ZOO,
                       "hardware": hardware, "load_average_1min": load_range, "runs": rows, "table": table})
    ctx.write_report(bench_report(cfg, rows, table, hardware, load_range, plot))
    print_table(table, title=f"PPO on {cfg.env}, {cfg.frames:,} frames, seeds {cfg.seeds} ({hardware}; 1-min load {load_range[0]}-{load_range[1]})")


def cell_name(impl: str, seed: int) -> str:
    return f"{impl}-seed{seed}"


def cell_settings(cfg: Config) -> dict:
    """What a kept cell must have been run with to count on resume."""
    return {"env": cfg.env, "frames": cfg.frames, "threshold": cfg.threshold, "ppo": cfg.ppo.model_dump(), "zoo": ZOO}


def cell_row(cfg: Config, impl: str, seed: int, cell, wall: float) -> dict:
    from labcli.rl.common import episodes, frames_to, recent_return
    from labcli.rl.ppo import rollout_frames

    history = episodes(cell.metrics())
    frames = rollout_frames(cfg.frames, cfg.ppo) if impl != "sb3_zoo" else -(-cfg.frames // (ZOO["n_envs"] * ZOO["n_steps"])) * ZOO["n_envs"] * ZOO["n_steps"]
    final = recent_return(history)
    return {"implementation": impl, "seed": seed, "frames": frames, "episodes": len(history),
            "frames_to_threshold": frames_to(cfg.threshold, history), "final_return": None if final is None else round(final, 4),
            "wall_time_s": round(wall), "frames_per_s": round(frames / wall)}


def aggregate(rows: list[dict], cfg: Config) -> list[dict]:
    """Per implementation: how many seeds reach the threshold, medians and ranges over seeds."""
    out = []
    for impl in cfg.implementations:
        mine = [r for r in rows if r["implementation"] == impl]
        reached = [r["frames_to_threshold"] for r in mine if r["frames_to_threshold"] is not None]
        finals = [r["final_return"] for r in mine if r["final_return"] is not None]
        walls = [r["wall_time_s"] for r in mine]
        out.append({
            "implementation": impl, "seeds reaching": f"{len(reached)}/{len(mine)}",
            "median frames to threshold": int(np.median(reached)) if reached else None,
            "final return (mean)": round(float(np.mean(finals)), 4) if finals else None,
            "final return (min-max)": f"{min(finals):.3f}-{max(finals):.3f}" if finals else None,
            "wall time s (median)": int(np.median(walls)),
            "wall time s (min-max)": f"{min(walls):.0f}-{max(walls):.0f}",
            "frames/s (median)": int(np.median([r["frames_per_s"] for r in mine])),
        })
    return out


def plot_cells(ctx, cfg: Config, cells: list) -> str:
    from labcli.rl.common import episodes, plot_returns

    curves = [(f"{impl} PPO", episodes(ctx.sub(cell_name(impl, seed)).metrics())) for impl, seed in cells]
    plot_returns(curves, ctx.path("bench_rl.png"), f"PPO on {cfg.env}, seeds {cfg.seeds}", cfg.threshold)
    return "bench_rl.png"


def bench_report(cfg: Config, rows: list[dict], table: list[dict], hardware: str, load: list, plot: str) -> str:
    from labcli.eval.tables import markdown_table

    a = cfg.ppo
    lines = [f"# bench rl: PPO on {cfg.env}, {cfg.frames:,} frames, seeds {cfg.seeds}", "",
             f"Hardware: {hardware}; 1-minute load average {load[0]}-{load[1]} during the run (wall times grow with it).",
             f"Frames to threshold: first frame count at which the mean return of the last 20 training episodes "
             f"reaches {cfg.threshold}; final return: mean of the last 20.", "",
             markdown_table(table), markdown_table(rows), f"![learning curves]({plot})", "",
             f"lab and sb3_matched: {a.num_envs} envs x {a.num_steps} steps, minibatch {a.minibatch_size}, {a.update_epochs} epochs, "
             f"lr {a.learning_rate:g}{' annealed' if a.anneal_lr else ''}, entropy {a.ent_coef:g}, clip {a.clip_coef:g}, "
             f"advantage normalisation {'on' if a.norm_adv else 'off'}, lab's CNN on the 7x7x3 view.",
             f"sb3_zoo: SB3 PPO MlpPolicy with RL Zoo's MiniGrid settings (FlatObsWrapper, VecNormalize, {ZOO['n_envs']} envs x "
             f"{ZOO['n_steps']} steps, batch {ZOO['batch_size']}, {ZOO['n_epochs']} epochs, lr {ZOO['learning_rate']:g}, "
             f"entropy {ZOO['ent_coef']:g})."]
    return "\n".join(lines) + "\n"
