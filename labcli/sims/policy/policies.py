"""The observation encoder and the two policies that share it: DiT diffusion and MLP regression.

An observation is the robot state (measured joint angles) and the task: the grounded goal, the
grounded obstacle (centre, footprint, orientation, height), the instruction's words and the
overhead camera image. Each part is embedded (joints and task by linear layers, the words by a
learned bag-of-words over the grounded parser's vocabulary, the image by a small CNN) and an MLP
fuses them into one vector: the "multimodal embedding" the DiT adds to its timestep embedding.
For classifier-free guidance the task part (goal, obstacle, words, image) is replaced by learned
'null' vectors with probability `p_uncond` in training; the joint angles are always seen.

Both policies predict a chunk of H future joint positions as offsets from the current angles,
scaled to [-1, 1] by the demonstrations' largest offset per chunk step and joint (the first
waypoints move less than the last, and keep their precision).
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from labcli.sims.grounding import VOCAB
from labcli.sims.policy.diffusion import diffusion_loss, make_schedulers, sample
from labcli.sims.policy.dit import DiT1D

WORD_IDS = {w: i + 2 for i, w in enumerate(VOCAB)}  # 0: padding, 1: unknown word
MAX_WORDS = 20
TASK_DIM = 10  # goal xyz + obstacle features (see labcli.sims.demos.obstacle_features)


def encode_words(texts: list[str]) -> np.ndarray:
    """Word ids (N, MAX_WORDS), zero-padded; words outside the parser's vocabulary map to 1."""
    out = np.zeros((len(texts), MAX_WORDS), dtype=np.int64)
    for i, text in enumerate(texts):
        ids = [WORD_IDS.get(w, 1) for w in re.findall(r"[a-z']+", text.lower())][:MAX_WORDS]
        out[i, : len(ids)] = ids
    return out


class ImageEncoder(nn.Module):
    """Three strided convolutions and a linear layer on the flattened map (keeps where things are)."""

    def __init__(self, size: int, out_dim: int, width: int = 32):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, width // 2, 5, 2, 2), nn.ReLU(), nn.Conv2d(width // 2, width, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, 2, 1), nn.ReLU())
        side = size
        for _ in range(3):
            side = (side + 1) // 2
        self.out = nn.Linear(width * side * side, out_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # uint8 NHWC -> [-1, 1] NCHW
        return self.out(self.conv(x).flatten(1))


class ObservationEncoder(nn.Module):
    def __init__(self, nq: int, image_size: int, d: int, text_dim: int = 32, image_dim: int = 64):
        super().__init__()
        self.state = nn.Linear(nq, d)
        self.task = nn.Linear(TASK_DIM, d)
        self.words = nn.EmbeddingBag(len(VOCAB) + 2, text_dim, mode="mean", padding_idx=0)
        self.text = nn.Linear(text_dim, d)
        self.image = ImageEncoder(image_size, image_dim) if image_size else None
        self.image_proj = nn.Linear(image_dim, d) if image_size else None
        parts = 4 if image_size else 3
        self.null = nn.Parameter(torch.zeros(parts - 1, d))  # task, text, image when the condition is dropped
        self.fuse = nn.Sequential(nn.SiLU(), nn.Linear(parts * d, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, obs: dict, drop: torch.Tensor | None = None) -> torch.Tensor:
        """obs: q (B, nq) and task (B, TASK_DIM) normalised, words (B, MAX_WORDS), image (B, S, S, 3) uint8,
        or (M, S, S, 3) with image_index (B,) when rows share images (each image is encoded once).
        drop (B,) bool: replace the task parts by the null vectors (classifier-free guidance)."""
        task = [self.task(obs["task"]), self.text(self.words(obs["words"]))]
        if self.image is not None:
            features = self.image_proj(self.image(obs["image"]))
            task.append(features[obs["image_index"]] if "image_index" in obs else features)
        if drop is not None:
            task = [torch.where(drop[:, None], self.null[i].expand_as(part), part) for i, part in enumerate(task)]
        return self.fuse(torch.cat([self.state(obs["q"]), *task], dim=-1))


class Normaliser(nn.Module):
    """Dataset statistics kept with the model: joint and task mean/std, the chunk scale per step and joint."""

    def __init__(self, nq: int, horizon: int):
        super().__init__()
        for name, size in (("q_mean", (nq,)), ("q_std", (nq,)), ("task_mean", (TASK_DIM,)), ("task_std", (TASK_DIM,)),
                           ("act_scale", (horizon, nq))):
            self.register_buffer(name, torch.ones(size))

    def fit(self, q: np.ndarray, task: np.ndarray, offsets: np.ndarray) -> None:
        self.q_mean.copy_(torch.tensor(q.mean(0)))
        self.q_std.copy_(torch.tensor(q.std(0) + 1e-3))
        self.task_mean.copy_(torch.tensor(task.mean(0)))
        self.task_std.copy_(torch.tensor(task.std(0) + 1e-3))
        self.act_scale.copy_(torch.tensor(np.abs(offsets).max(0) + 1e-3))

    def obs(self, raw: dict) -> dict:
        return {**raw, "q": (raw["q"] - self.q_mean) / self.q_std, "task": (raw["task"] - self.task_mean) / self.task_std}


class DiffusionPolicy(nn.Module):
    """DiT over the chunk, conditioned on timestep + observation embedding (adaLN-Zero)."""

    kind = "dit"

    def __init__(self, nq: int, horizon: int, image_size: int, d: int = 128, depth: int = 4, heads: int = 4,
                 train_steps: int = 100, prediction: str = "epsilon", p_uncond: float = 0.1):
        super().__init__()
        self.nq, self.horizon, self.p_uncond = nq, horizon, p_uncond
        self.norm = Normaliser(nq, horizon)
        self.encoder = ObservationEncoder(nq, image_size, d)
        self.dit = DiT1D(nq, horizon, d, depth, heads)
        self.train_scheduler, self.sample_scheduler = make_schedulers(train_steps, prediction)

    def loss(self, obs: dict, offsets: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        obs = self.norm.obs(obs)
        drop = torch.rand(offsets.shape[0], generator=generator, device=offsets.device) < self.p_uncond
        cond = self.encoder(obs, drop)
        return diffusion_loss(lambda x, t: self.dit(x, t, cond), offsets / self.norm.act_scale, self.train_scheduler, generator)

    @torch.no_grad()
    def act(self, obs: dict, guidance: float = 1.0, steps: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
        """Absolute joint targets (B, H, nq) for the next H policy steps."""
        normed = self.norm.obs(obs)
        batch = normed["q"].shape[0]
        cond = self.encoder(normed) if guidance != 0.0 else None
        uncond = self.encoder(normed, torch.ones(batch, dtype=torch.bool, device=normed["q"].device)) if guidance != 1.0 else None

        def denoise(x, t, conditional):
            return self.dit(x, t, cond if conditional else uncond)

        x = sample(denoise, (batch, self.horizon, self.nq), self.sample_scheduler, steps, guidance, generator, normed["q"].device)
        return obs["q"][:, None, :] + x * self.norm.act_scale


class MLPPolicy(nn.Module):
    """Behaviour cloning by regression: the same observation embedding, an MLP, MSE on the chunk."""

    kind = "mlp"

    def __init__(self, nq: int, horizon: int, image_size: int, d: int = 128, hidden: int = 512):
        super().__init__()
        self.nq, self.horizon = nq, horizon
        self.norm = Normaliser(nq, horizon)
        self.encoder = ObservationEncoder(nq, image_size, d)
        self.head = nn.Sequential(nn.Linear(d, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, horizon * nq))

    def loss(self, obs: dict, offsets: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        pred = self.head(self.encoder(self.norm.obs(obs))).view(-1, self.horizon, self.nq)
        return nn.functional.mse_loss(pred, offsets / self.norm.act_scale)

    @torch.no_grad()
    def act(self, obs: dict, guidance: float = 1.0, steps: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
        pred = self.head(self.encoder(self.norm.obs(obs))).view(-1, self.horizon, self.nq)
        return obs["q"][:, None, :] + pred * self.norm.act_scale
