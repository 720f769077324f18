"""What PPO and DQN share on MiniGrid: envs, the image encoder, agent files, evaluation, plots, GIFs.

A training loop's episodes are metrics rows `{"step": FRAMES, "episode_return": R, "episode_length": N}`
(step counts env frames, all envs together: CleanRL's global_step); `episodes(rows)` picks them out.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from labcli import runs
from labcli.errors import UserError


def check_env_id(env_id: str) -> None:
    """Fail early, in one line, on an env id that is not a registered MiniGrid env."""
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers the MiniGrid-* envs)

    names = [name for name in gym.registry if name.startswith(("MiniGrid-", "BabyAI-"))]
    if env_id not in names:
        close = difflib.get_close_matches(env_id, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserError(f"unknown MiniGrid env '{env_id}'", f"{hint}e.g. MiniGrid-Empty-5x5-v0, MiniGrid-DoorKey-5x5-v0")


def is_minigrid(env_id: str) -> bool:
    return env_id.startswith(("MiniGrid-", "BabyAI-"))


def make_env(env_id: str, seed: int, render: bool = False):
    """One MiniGrid env seen through its 7x7x3 egocentric image (object, colour, state per cell);
    any other gymnasium env id (e.g. CartPole-v1) as it is."""

    def thunk():
        import gymnasium as gym
        import minigrid  # noqa: F401

        from labcli.rl.envstate import Replayable

        env = gym.make(env_id, render_mode="rgb_array" if render else None)
        if is_minigrid(env_id):
            from minigrid.wrappers import ImgObsWrapper

            env = ImgObsWrapper(env)
        env = Replayable(gym.wrappers.RecordEpisodeStatistics(env))
        env.action_space.seed(seed)
        return env

    return thunk


def make_vector_env(env_id: str, num_envs: int, seed: int):
    """Synchronous vector env; finished episodes reset within the same step (CleanRL semantics)."""
    import gymnasium as gym

    return gym.vector.SyncVectorEnv([make_env(env_id, seed + i) for i in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def finished_episodes(infos: dict) -> list[tuple[float, int]]:
    """(return, length) of every episode that ended in this vector step (SAME_STEP autoreset)."""
    final = infos.get("final_info", {})
    if "episode" not in final:
        return []
    stats, mask = final["episode"], final["_episode"]
    return [(float(r), int(n)) for r, n, m in zip(stats["r"], stats["l"], mask) if m]


class ImageEncoder(nn.Module):
    """The rl-starter-files CNN for MiniGrid's 7x7x3 symbolic image -> 64 features."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 2), nn.ReLU(),
            nn.Conv2d(32, 64, 2), nn.ReLU(), nn.Flatten(),
        )
        self.out_dim = 64

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float().permute(0, 3, 1, 2))


class VectorEncoder(nn.Module):
    """An MLP (64 tanh units, two layers, CleanRL's classic-control trunk) for vector observations."""

    def __init__(self, obs_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
        self.out_dim = 64

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float())


def encoder_for(obs_shape: tuple | None) -> nn.Module:
    """The CNN for MiniGrid's HxWx3 image (and when the shape is unknown), the MLP for a vector."""
    return VectorEncoder(int(obs_shape[0])) if obs_shape is not None and len(obs_shape) == 1 else ImageEncoder()


def save_agent(path: Path, algo: str, env_id: str, network: nn.Module, n_actions: int) -> None:
    """Atomic torch.save of the weights plus what is needed to rebuild the network."""
    state = {"algo": algo, "env_id": env_id, "n_actions": n_actions, "state_dict": network.state_dict()}
    runs.write_with(path, lambda tmp: torch.save(state, tmp))


def load_agent(path: str | Path) -> dict:
    """Read an agent.pt (or the agent.pt inside a run folder), with one-line errors."""
    path = Path(path)
    if path.is_dir():
        path = path / "agent.pt"
    if not path.is_file():
        raise UserError(f"--load {path}: no agent file there", "pass a run folder of `lab simulate minigrid` or its agent.pt")
    try:
        agent = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"--load {path}: not a lab agent ({type(exc).__name__})", "pass an agent.pt written by `lab simulate minigrid`") from None
    if not isinstance(agent, dict) or "algo" not in agent:
        raise UserError(f"--load {path}: not a lab agent", "pass an agent.pt written by `lab simulate minigrid`")
    return agent


@torch.no_grad()
def evaluate(act, env_id: str, episodes: int, seed: int, frames: list | None = None) -> list[float]:
    """Returns of `act` over `episodes` episodes; with `frames`, also collect rgb frames of the first one."""
    env = make_env(env_id, seed, render=frames is not None)()
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + 10_000 + episode)
        done, total = False, 0.0
        while not done:
            if frames is not None and episode == 0:
                frames.append(env.render())
            action = act(torch.as_tensor(obs[None]))
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total += float(reward)
            done = terminated or truncated
        if frames is not None and episode == 0:
            frames.append(env.render())
        returns.append(total)
    env.close()
    return returns


def save_gif(path: Path, frames: list, fps: int = 4) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    runs.write_with(path, lambda tmp: images[0].save(tmp, save_all=True, append_images=images[1:],
                                                        duration=int(1000 / fps), loop=0))


def episodes(rows: list[dict]) -> list[dict]:
    """The finished-episode rows of a metrics log, in order."""
    return [r for r in rows if "episode_return" in r]


def frames_to(threshold: float, history: list[dict], window: int = 20) -> int | None:
    """First frame count at which the mean return of the last `window` episodes reaches `threshold`."""
    returns = []
    for row in history:
        returns.append(row["episode_return"])
        if len(returns) >= window and np.mean(returns[-window:]) >= threshold:
            return int(row["step"])
    return None


def recent_return(history: list[dict], window: int = 20) -> float | None:
    """Mean return of the last `window` episodes (None before the first one)."""
    last = [r["episode_return"] for r in history[-window:]]
    return float(np.mean(last)) if last else None


def plot_returns(curves: list[tuple[str, list[dict]]], path: Path, title: str, threshold: float,
                 window: int = 20, dots: bool = False) -> Path:
    """Mean return of the last `window` episodes against frames, one line per (label, history);
    a label used twice (one per seed) shares its colour and legend entry. `dots`: every episode too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labcli.eval.plots import save

    fig, ax = plt.subplots(figsize=(7, 3.8))
    colours = {label: f"C{i}" for i, label in enumerate(dict.fromkeys(label for label, _ in curves))}
    shown = set()
    for label, history in curves:
        frames = np.array([h["step"] for h in history])
        returns = np.array([h["episode_return"] for h in history])
        if dots:
            ax.plot(frames, returns, ".", color=colours[label], alpha=0.2)
        if len(returns) >= window:
            smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
            ax.plot(frames[window - 1:], smooth, color=colours[label], alpha=0.85,
                    label=None if label in shown else f"{label} (mean of last {window})")
            shown.add(label)
    ax.axhline(threshold, color="k", ls=":", lw=1)
    ax.set_xlabel("frames")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    if shown:
        ax.legend(loc="lower right")
    fig.tight_layout()
    return save(fig, path)


def progress_bar(label: str, total: int, start: int = 0, enabled: bool = True):
    """A transient rich bar over env frames, showing the recent mean return; `.advance(frames, ret)`.
    Shown only on a terminal (a piped or logged run gets just the headline lines)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console()
    return FramesBar(Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
                              TextColumn("return {task.fields[ret]}"), TimeRemainingColumn(), transient=True,
                              console=console, disable=not (enabled and console.is_terminal)), total, start)


class FramesBar:
    def __init__(self, progress, total: int, start: int):
        self.progress = progress
        self.task = progress.add_task("train", total=total, completed=start, ret="-")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def advance(self, frames: int, recent: float | None) -> None:
        self.progress.update(self.task, completed=frames, ret="-" if recent is None else f"{recent:.2f}")
