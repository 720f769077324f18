"""What PPO and DQN share on MiniGrid: env construction, the image encoder, save/load, evaluation, GIFs."""

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


def make_env(env_id: str, seed: int, render: bool = False):
    """One MiniGrid env seen through its 7x7x3 egocentric image (object, colour, state per cell)."""

    def thunk():
        import gymnasium as gym
        import minigrid  # noqa: F401
        from minigrid.wrappers import ImgObsWrapper

        env = gym.make(env_id, render_mode="rgb_array" if render else None)
        env = gym.wrappers.RecordEpisodeStatistics(ImgObsWrapper(env))
        env.action_space.seed(seed)
        return env

    return thunk


def make_vector_env(env_id: str, num_envs: int, seed: int):
    """Synchronous vector env; finished episodes reset within the same step (CleanRL semantics)."""
    import gymnasium as gym

    envs = gym.vector.SyncVectorEnv([make_env(env_id, seed + i) for i in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return envs


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




def save_agent(path: Path, algo: str, env_id: str, network: nn.Module, n_actions: int, extra: dict | None = None) -> None:
    """Atomic torch.save of the weights plus what is needed to rebuild the network."""
    state = {"algo": algo, "env_id": env_id, "n_actions": n_actions, "state_dict": network.state_dict(), **(extra or {})}
    runs.write_with(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict:
    """Read an agent.pt (or the agent.pt inside a run folder), with one-line errors."""
    path = Path(path)
    if path.is_dir():
        path = path / "agent.pt"
    if not path.is_file():
        raise UserError(f"--load {path}: no agent file there", "pass a run folder of `lab simulate minigrid` or its agent.pt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"--load {path}: not a lab agent ({type(exc).__name__})", "pass an agent.pt written by `lab simulate minigrid`") from None
    if not isinstance(ckpt, dict) or "algo" not in ckpt:
        raise UserError(f"--load {path}: not a lab agent", "pass an agent.pt written by `lab simulate minigrid`")
    return ckpt


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


def frames_to(threshold: float, history: list[dict], window: int = 20) -> int | None:
    """First frame count at which the mean return of the last `window` episodes reaches `threshold`."""
    returns = []
    for row in history:
        returns.append(row["return"])
        if len(returns) >= window and np.mean(returns[-window:]) >= threshold:
            return int(row["frames"])
    return None
