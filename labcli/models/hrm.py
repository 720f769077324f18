"""The Hierarchical Reasoning Model (Wang et al. 2025) and the transformers it is compared with.

Three models over the same cells-as-tokens input (a CLS token, then one token per cell), with the
same blocks (post-norm, RMSNorm, SwiGLU, non-causal attention, learned positions), the same number
of parameters, and the same output heads (a digit per cell, and a Q head on the CLS token that
predicts whether to halt):

* `HRM`: a low-level module L (`layers` blocks) and a high-level module H (`layers` blocks). One
  *segment* runs N high-level cycles of T low-level steps: z_L <- L(z_L + z_H + x) every step and
  z_H <- H(z_H + z_L) at the end of each cycle. Only the last L step and the last H step keep a
  graph (the one-step gradient approximation: no backpropagation through the other N*T-1 steps,
  O(1) memory in N*T); the carried state leaves the segment detached.
* `LoopedTransformer` with `segments > 1`: one module of 2*`layers` blocks, z <- T(z + x) once per
  segment, the same carried state, deep supervision and halting as HRM (the ARC Prize analysis's
  "transformer with the outer loop").
* `LoopedTransformer` with `segments == 1`: a plain single-pass transformer.

The *outer loop* (`segment`): each call advances the carried state by one segment and returns
logits and the halting logit; the training recipe supervises every segment (deep supervision) and
halts a puzzle when the Q head says so (adaptive computation time, ACT). `act_step` implements
that bookkeeping over a batch of slots, as the paper's code does: a halted slot takes the next
puzzle with a fresh state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class HRMConfig:
    vocab: int = 7  # 0 = blank, 1..n digits
    cells: int = 36
    d_model: int = 128
    n_heads: int = 4
    layers: int = 2  # per module: HRM has L and H of `layers` each; the transformers have 2 * layers
    expansion: float = 4.0
    h_cycles: int = 2  # N
    l_cycles: int = 2  # T


def rms_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class Block(nn.Module):
    """Post-norm transformer block (as HRM's): x = norm(x + attn(x)); x = norm(x + swiglu(x))."""

    def __init__(self, d: int, heads: int, expansion: float):
        super().__init__()
        hidden = int(round(expansion * d * 2 / 3 / 8)) * 8
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.gate_up = nn.Linear(d, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, D = x.shape
        q, k, v = self.qkv(x).view(B, S, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, S, D)
        x = rms_norm(x + self.out(attn))
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return rms_norm(x + self.down(F.silu(gate) * up))


class Module(nn.Module):
    """A stack of blocks with input injection: f(z, inject) = blocks(z + inject)."""

    def __init__(self, cfg: HRMConfig, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.n_heads, cfg.expansion) for _ in range(layers))

    def forward(self, z: torch.Tensor, inject: torch.Tensor) -> torch.Tensor:
        z = z + inject
        for block in self.blocks:
            z = block(z)
        return z


class _Base(nn.Module):
    """Embedding (CLS + cells), output heads, and the initial carried state shared by every arm."""

    def __init__(self, cfg: HRMConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab, d)
        self.cls = nn.Parameter(torch.zeros(d))
        self.pos = nn.Parameter(torch.randn(cfg.cells + 1, d))  # on the scale of the token embeddings
        self.head = nn.Linear(d, cfg.vocab, bias=False)
        self.q_head = nn.Linear(d, 1)
        nn.init.zeros_(self.q_head.weight)
        nn.init.constant_(self.q_head.bias, -5.0)  # start by not halting (as the paper's code)
        nn.init.normal_(self.embed.weight, std=1.0 / math.sqrt(d))
        self.register_buffer("z0", torch.randn(d) * 0.02 + 0.0, persistent=True)  # the initial state, fixed

    def inputs(self, puzzles: torch.Tensor) -> torch.Tensor:
        """[B, cells] ints -> [B, 1 + cells, d] (scaled like the paper's embedding)."""
        x = self.embed(puzzles.long()) * math.sqrt(self.cfg.d_model)
        cls = self.cls.expand(len(puzzles), 1, -1)
        return torch.cat([cls, x], 1) + self.pos

    def outputs(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Digit logits per cell [B, cells, vocab] and the halt logit [B]."""
        return self.head(z[:, 1:]), self.q_head(z[:, 0]).squeeze(-1)

    def init_state(self, batch: int, device) -> tuple:
        raise NotImplementedError


class HRM(_Base):
    def __init__(self, cfg: HRMConfig):
        super().__init__(cfg)
        self.L = Module(cfg, cfg.layers)
        self.H = Module(cfg, cfg.layers)

    def init_state(self, batch: int, device) -> tuple:
        z = self.z0.to(device).expand(batch, self.cfg.cells + 1, -1).clone()
        return (z, z.clone())

    def segment(self, state: tuple, x: torch.Tensor) -> tuple[tuple, torch.Tensor, torch.Tensor]:
        """One segment: N*T low-level steps and N high-level steps, the gradient through the last of each."""
        z_H, z_L = state
        N, T = self.cfg.h_cycles, self.cfg.l_cycles
        with torch.no_grad():
            for step in range(N * T - 1):
                z_L = self.L(z_L, z_H + x)
                if (step + 1) % T == 0:
                    z_H = self.H(z_H, z_L)
        z_L = self.L(z_L, z_H + x)  # the one step with a graph, at the fixed point's neighbourhood
        z_H = self.H(z_H, z_L)
        logits, q = self.outputs(z_H)
        return (z_H.detach(), z_L.detach()), logits, q


class LoopedTransformer(_Base):
    """2*layers blocks in one module; `segment` runs it once on (state + input), with a full gradient."""

    def __init__(self, cfg: HRMConfig):
        super().__init__(cfg)
        self.T = Module(cfg, 2 * cfg.layers)

    def init_state(self, batch: int, device) -> tuple:
        return (self.z0.to(device).expand(batch, self.cfg.cells + 1, -1).clone(),)

    def segment(self, state: tuple, x: torch.Tensor) -> tuple[tuple, torch.Tensor, torch.Tensor]:
        z = self.T(state[0], x)
        logits, q = self.outputs(z)
        return (z.detach(),), logits, q


ARMS = {"hrm": HRM, "looped-transformer": LoopedTransformer, "transformer": LoopedTransformer}


def build(arm: str, cfg: HRMConfig) -> _Base:
    return ARMS[arm](cfg)


def segment_flops(model: _Base, batch: int = 1) -> float:
    """Forward FLOPs of one segment for a batch (measured with torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    puzzles = torch.zeros(batch, model.cfg.cells, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.segment(model.init_state(batch, device), model.inputs(puzzles))
    return float(counter.get_total_flops())


@dataclass
class Carry:
    """A batch of slots, each holding one puzzle until it halts (the paper's training carry)."""

    state: tuple
    puzzles: torch.Tensor  # [B, cells]
    solutions: torch.Tensor  # [B, cells]
    steps: torch.Tensor  # [B] segments run on the current puzzle
    halted: torch.Tensor  # [B] bool: take a new puzzle at the next step


def new_carry(model: _Base, batch: int, device) -> Carry:
    cells = model.cfg.cells
    return Carry(model.init_state(batch, device), torch.zeros(batch, cells, dtype=torch.long, device=device),
                 torch.zeros(batch, cells, dtype=torch.long, device=device), torch.zeros(batch, dtype=torch.long, device=device),
                 torch.ones(batch, dtype=torch.bool, device=device))


def act_step(model: _Base, carry: Carry, next_puzzles, max_segments: int, explore: float,
             generator: torch.Generator | None = None):
    """One training segment over the carry. Halted slots first take new puzzles (from
    `next_puzzles(k)` -> (puzzles, solutions) tensors of k rows) with a fresh state. Returns the new
    carry, logits, halt logits and the solutions they answer. A slot halts when it has run
    `max_segments`, or when its halt logit is positive and it has run at least its minimum (2..max
    with probability `explore`, else 1)."""
    device = carry.puzzles.device
    fresh = carry.halted
    if fresh.any():
        k = int(fresh.sum())
        puzzles, solutions = next_puzzles(k)
        carry.puzzles[fresh] = puzzles.to(device)
        carry.solutions[fresh] = solutions.to(device)
        carry.steps[fresh] = 0
        state = tuple(s.clone() for s in carry.state)
        for s, init in zip(state, model.init_state(k, device)):
            s[fresh] = init
        carry.state = state
    state, logits, q = model.segment(carry.state, model.inputs(carry.puzzles))
    steps = carry.steps + 1
    halted = steps >= max_segments
    if model.training and max_segments > 1:
        rand = torch.rand(len(steps), generator=generator, device="cpu").to(device)
        low = torch.randint(2, max_segments + 1, (len(steps),), generator=generator, device="cpu").to(device)
        min_steps = torch.where(rand < explore, low, torch.ones_like(low))
        halted = halted | ((q.detach() > 0) & (steps >= min_steps))
    return Carry(state, carry.puzzles, carry.solutions, steps, halted), logits, q


@torch.no_grad()
def solve_all(model: _Base, puzzles: torch.Tensor, segments: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Predictions after each of `segments` segments, and the halt logits (no early halting)."""
    state, x = model.init_state(len(puzzles), puzzles.device), model.inputs(puzzles)
    preds, qs = [], []
    for _ in range(segments):
        state, logits, q = model.segment(state, x)
        preds.append(logits.argmax(-1))
        qs.append(q)
    return preds, qs
