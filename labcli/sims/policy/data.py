"""Training pairs from expert demonstrations: (observation at step k, the next H joint waypoints).

Every waypoint of every demonstration is a pair, including the final hold (so the policies learn to
stop). The chunk past a demonstration's end repeats its last waypoint. The observed joint angles
get Gaussian noise (`q_noise` rad) in training: the expert's waypoints are exact, the tracked arm's
are not. A training batch takes `per_demo` steps from each of batch_size / per_demo demonstrations,
so the CNN encodes each batch's images once instead of once per row.
"""

from __future__ import annotations

import numpy as np
import torch

from labcli.sims.policy.policies import encode_words


class ChunkData:
    def __init__(self, demos: dict, horizon: int, q_noise: float = 0.0, device: torch.device | str = "cpu"):
        q = demos["q"]
        n = len(q)
        padded = np.concatenate([q, np.repeat(q[:, -1:], horizon, axis=1)], axis=1)
        self.q = torch.tensor(padded, device=device)
        self.task = torch.tensor(np.concatenate([demos["goal"], demos["obstacle"]], axis=1), device=device)
        self.words = torch.tensor(encode_words(list(demos["instruction"])), device=device)
        self.image = torch.tensor(demos["image"], device=device)
        pairs = [(i, k) for i in range(n) for k in range(int(demos["length"][i]))]
        self.pairs = torch.tensor(pairs, device=device)
        self.lengths = torch.tensor(demos["length"], device=device)
        self.horizon, self.q_noise, self.device = horizon, q_noise, device
        self.steps = torch.arange(1, horizon + 1, device=device)

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> tuple[dict, torch.Tensor]:
        demo, k = self.pairs[index, 0], self.pairs[index, 1]
        q_now = self.q[demo, k]
        chunk = self.q[demo[:, None], k[:, None] + self.steps[None, :]]
        offsets = chunk - q_now[:, None, :]
        if self.q_noise > 0 and generator is not None:
            q_now = q_now + self.q_noise * torch.randn(q_now.shape, generator=generator, device=q_now.device)
        obs = {"q": q_now, "task": self.task[demo], "words": self.words[demo], "image": self.image[demo]}
        return obs, offsets

    def sample(self, batch_size: int, generator: torch.Generator, per_demo: int = 8) -> tuple[dict, torch.Tensor]:
        """batch_size rows: per_demo random steps of each of batch_size // per_demo random demonstrations."""
        n_demos = max(1, batch_size // per_demo)
        demos = torch.randint(0, len(self.lengths), (n_demos,), generator=generator, device=self.device)
        u = torch.rand((n_demos, per_demo), generator=generator, device=self.device)
        k = (u * self.lengths[demos, None]).long().flatten()
        demo = demos.repeat_interleave(per_demo)
        q_now = self.q[demo, k]
        offsets = self.q[demo[:, None], k[:, None] + self.steps[None, :]] - q_now[:, None, :]
        if self.q_noise > 0:
            q_now = q_now + self.q_noise * torch.randn(q_now.shape, generator=generator, device=self.device)
        image_index = torch.arange(n_demos, device=self.device).repeat_interleave(per_demo)
        obs = {"q": q_now, "task": self.task[demo], "words": self.words[demo], "image": self.image[demos], "image_index": image_index}
        return obs, offsets

    def all_offsets(self) -> np.ndarray:
        """Every pair's chunk offsets (for the normaliser)."""
        out = []
        for start in range(0, len(self.pairs), 4096):
            out.append(self.batch(torch.arange(start, min(start + 4096, len(self.pairs)), device=self.device))[1].cpu().numpy())
        return np.concatenate(out)
