"""A timing side channel on an early-exit network, for `lab detect side-channel`.

`EarlyExitMLP` is an edge-style classifier with an exit head after each of its blocks: at inference it stops at the
first exit whose top softmax probability reaches `threshold` (BranchyNet, Teerapittayanon et al. 2016), so confident
inputs cost one block and hard ones all of them. How long an answer takes therefore says which exit was taken, and,
because some digits are easier than others, something about the predicted class. `constant_time=True` is the
mitigation: every block and head always runs, and the answer is still the first confident exit's (identical outputs).

The model runs in its own process (`TimedServer`: a Python subprocess answering over pipes); the attacker sees only
how long each answer took on its side of the pipe. `attack` fits a classifier from timings to the hidden label on one
split of the queries and scores it on the other.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class EarlyExitMLP(nn.Module):
    """784 -> width, then `blocks - 1` blocks of `depth` width x width layers; an exit head (Linear width -> 10) after
    every block. `blocks_run` counts the blocks the last `infer` call executed."""

    def __init__(self, width: int = 768, depth: int = 3, blocks: int = 3, inputs: int = 784, classes: int = 10):
        super().__init__()
        self.arch = {"width": width, "depth": depth, "blocks": blocks, "inputs": inputs, "classes": classes}
        first = nn.Sequential(nn.Flatten(), nn.Linear(inputs, width), nn.ReLU())
        rest = [nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.ReLU())]) for _ in range(blocks - 1)]
        self.blocks = nn.ModuleList([first, *rest])
        self.exits = nn.ModuleList([nn.Linear(width, classes) for _ in range(blocks)])
        self.blocks_run = 0

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit (what training sees: the sum of the exits' losses)."""
        out = []
        for block, head in zip(self.blocks, self.exits):
            x = block(x)
            out.append(head(x))
        return out

    @torch.inference_mode()
    def infer(self, x: torch.Tensor, threshold: float, constant_time: bool = False) -> tuple[int, int]:
        """(predicted class, exit index) for one input [1, ...]: the first exit with max softmax >= threshold (the last
        exit otherwise). constant_time: run every block and head regardless, same answer."""
        answer = None
        self.blocks_run = 0
        for i, (block, head) in enumerate(zip(self.blocks, self.exits)):
            x = block(x)
            self.blocks_run += 1
            p = F.softmax(head(x), 1)[0]
            confident = bool(p.max() >= threshold) or i == len(self.blocks) - 1
            if answer is None and confident:
                answer = (int(p.argmax()), i)
                if not constant_time:
                    break
        return answer


def train_early_exit(model: EarlyExitMLP, X, y, *, epochs: int, lr: float = 1e-3, batch_size: int = 64, seed: int = 0):
    """Adam on the sum of every exit's cross-entropy (each exit learns to classify on its own)."""
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X), generator=gen).split(batch_size):
            loss = sum(F.cross_entropy(logits, y[idx]) for logits in model(X[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _read_frame(stream) -> bytes:
    size = struct.unpack("<I", stream.read(4))[0]
    return stream.read(size)


def _write_frame(stream, payload: bytes) -> None:
    stream.write(struct.pack("<I", len(payload)) + payload)
    stream.flush()


def worker() -> None:
    """The served model (run as its own process by TimedServer): the first frame on stdin is the pickled
    (state_dict, arch, threshold, constant_time); then each frame is one float32 image, answered on stdout with
    (class, exit, blocks run) as three int32; an empty frame ends it."""
    torch.set_num_threads(1)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    state, arch, threshold, constant_time = pickle.loads(_read_frame(stdin))
    model = EarlyExitMLP(**arch)
    model.load_state_dict(state)
    model.eval()
    shape = (1, arch["inputs"])
    while payload := _read_frame(stdin):
        x = torch.frombuffer(bytearray(payload), dtype=torch.float32).view(shape)
        pred, exit_ = model.infer(x, threshold, constant_time)
        _write_frame(stdout, struct.pack("<3i", pred, exit_, model.blocks_run))


class TimedServer:
    """The model in its own Python process, over pipes. `query(x)` returns (class, exit, blocks run, seconds from
    sending the image to reading the answer), timed on the caller's side as a remote attacker would."""

    def __init__(self, model: EarlyExitMLP, threshold: float, constant_time: bool):
        root = str(Path(__file__).resolve().parents[2])  # the labcli this file belongs to, first on the path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.proc = subprocess.Popen([sys.executable, "-c", "from labcli.detect.sidechannel import worker; worker()"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        _write_frame(self.proc.stdin, pickle.dumps((state, model.arch, threshold, constant_time)))

    def query(self, x: np.ndarray) -> tuple[int, int, int, float]:
        payload = np.ascontiguousarray(x, dtype=np.float32).tobytes()
        start = time.perf_counter()
        _write_frame(self.proc.stdin, payload)
        answer = self.proc.stdout.read(4 + 12)
        elapsed = time.perf_counter() - start
        if len(answer) < 16:
            raise RuntimeError(f"the timed model process ended (exit code {self.proc.poll()})")
        pred, exit_, blocks = struct.unpack("<3i", answer[4:])
        return pred, exit_, blocks, elapsed

    def close(self) -> None:
        try:
            _write_frame(self.proc.stdin, b"")
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def measure(servers: dict[str, TimedServer], X: np.ndarray, repeats: int, warmup: int = 20) -> dict[str, dict]:
    """Query every image `repeats` times on every server, interleaved (image i goes to each server in turn, in rounds
    over the whole set), so a slow spell of a shared machine hits every mode and image alike. Returns per server and
    image: pred, exit, blocks run, and timings [n, repeats] in seconds."""
    for server in servers.values():
        for i in range(min(warmup, len(X))):
            server.query(X[i : i + 1])
    out = {name: {"pred": np.zeros(len(X), int), "exit": np.zeros(len(X), int), "blocks": np.zeros(len(X), int),
                  "times": np.zeros((len(X), repeats))} for name in servers}
    for r in range(repeats):
        for i in range(len(X)):
            for name, server in servers.items():
                o = out[name]
                o["pred"][i], o["exit"][i], o["blocks"][i], o["times"][i, r] = server.query(X[i : i + 1])
    return out


def split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint halves of range(n): the attacker profiles on the first, is scored on the second."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def attack(feature: np.ndarray, hidden: np.ndarray, fit_idx: np.ndarray, score_idx: np.ndarray, seed: int = 0) -> dict:
    """Infer `hidden` (exit or class) from a timing feature [n] or [n, k]: a depth-4 decision tree fitted on fit_idx,
    accuracy on score_idx; chance = the accuracy of always guessing the most common value of the fit split."""
    from sklearn.tree import DecisionTreeClassifier

    if np.intersect1d(fit_idx, score_idx).size:
        raise ValueError("the attack is fitted and scored on overlapping queries")
    f = np.log(np.asarray(feature, dtype=float).reshape(len(hidden), -1))
    clf = DecisionTreeClassifier(max_depth=4, min_samples_leaf=5, random_state=seed).fit(f[fit_idx], hidden[fit_idx])
    values, counts = np.unique(hidden[fit_idx], return_counts=True)
    majority = values[counts.argmax()]
    return {"accuracy": float((clf.predict(f[score_idx]) == hidden[score_idx]).mean()),
            "chance": float((hidden[score_idx] == majority).mean())}


def bayes_bound(exit_: np.ndarray, hidden: np.ndarray, fit_idx: np.ndarray, score_idx: np.ndarray) -> float:
    """Accuracy of guessing `hidden` from the true exit (most common value per exit on fit_idx): the best any
    timing attack can do when time reveals the exit and nothing else."""
    guess = {}
    for e in np.unique(exit_[fit_idx]):
        values, counts = np.unique(hidden[fit_idx][exit_[fit_idx] == e], return_counts=True)
        guess[e] = values[counts.argmax()]
    fallback = np.bincount(hidden[fit_idx]).argmax()
    return float(np.mean([guess.get(e, fallback) == h for e, h in zip(exit_[score_idx], hidden[score_idx])]))
