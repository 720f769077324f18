"""Memory-efficient backprop techniques for a Hugging Face GPT-2, and an exact count of what they save.

`SavedTensors` is a `saved_tensors_hooks` context: every tensor autograd saves for backward passes
through its pack hook, where unique storages (parameters excluded) are counted in bytes and, for
the offload technique, moved to host memory. Non-reentrant `torch.utils.checkpoint` regions use
their own hooks (nothing inside is saved), but they keep their inputs alive for the recompute:
our checkpoint wrappers `hold()` those inputs so the count stays exact.

`apply(model, technique)` patches one model in place, so every forward of it (a measuring pass
or the engine's training steps) uses the technique; each patch changes memory, never the math
(gradients equal the baseline's: tests check within 1e-6 in fp32). `CountingLoss` is the engine
loss that counts what each training forward saved, so a timed run shows that it ran the technique.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.utils.checkpoint import checkpoint

TECHNIQUES = {
    "baseline": "autograd keeps every activation",
    "hf-checkpointing": "transformers activation_checkpointing_enable(): every block recomputed",
    "ckpt-every-block": "manual torch.utils.checkpoint around every block",
    "ckpt-every-k": "manual torch.utils.checkpoint around every k-th block",
    "ckpt-attention": "manual torch.utils.checkpoint around attention only",
    "custom-mlp": "autograd.Function MLP that saves only its input and recomputes in backward",
    "offload-cpu": "saved_tensors_hooks move every saved activation to host memory",
}
CHECKPOINTING = {"hf-checkpointing", "ckpt-every-block", "ckpt-every-k", "ckpt-attention", "custom-mlp"}

_ACTIVE: list["SavedTensors"] = []
OFFLOADS = "_lab_offloads_saved_tensors"  # set on a model by apply(model, "offload-cpu")


class SavedTensors(torch.autograd.graph.saved_tensors_hooks):
    """Count (and optionally offload) the activations autograd saves for backward."""

    def __init__(self, model: torch.nn.Module, offload: bool | None = None):
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.storages: set[int] = set()
        self.bytes = 0  # unique non-parameter storages kept on the device for backward (or by checkpoints)
        self.offloaded_bytes = 0  # copies held in host memory instead
        self.offload = getattr(model, OFFLOADS, False) if offload is None else offload  # apply(..., "offload-cpu")
        super().__init__(self._pack, self._unpack)

    def __enter__(self):
        _ACTIVE.append(self)
        super().__enter__()
        return self

    def __exit__(self, *exc):
        _ACTIVE.remove(self)
        return super().__exit__(*exc)

    def count(self, t: torch.Tensor) -> bool:
        """Count t's storage once; False for parameters and storages already counted."""
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in self.params or ptr in self.storages:
            return False
        self.storages.add(ptr)
        self.bytes += storage.nbytes()
        return True

    def _pack(self, t: torch.Tensor):
        if not self.offload or t.untyped_storage().data_ptr() in self.params:
            self.count(t)
            return t
        # Offloaded: the device copy may be freed and its address reused, so count every host copy
        # (views of one storage are copied separately, as torch's save_on_cpu does).
        host = torch.empty(t.size(), dtype=t.dtype, layout=t.layout, pin_memory=t.is_cuda)
        host.copy_(t, non_blocking=t.is_cuda)
        self.offloaded_bytes += host.nbytes
        return t.device, host

    @staticmethod
    def _unpack(packed):
        if isinstance(packed, tuple):
            device, host = packed
            return host.to(device, non_blocking=True)
        return packed


def hold(*values) -> None:
    """Count tensors that a checkpoint region keeps alive for its recompute."""
    if _ACTIVE:
        for v in values:
            if torch.is_tensor(v):
                _ACTIVE[-1].count(v)


def checkpointed(fn):
    """fn, run under non-reentrant torch.utils.checkpoint, with its held inputs counted."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        hold(*args, *kwargs.values())
        return checkpoint(fn, *args, use_reentrant=False, **kwargs)

    return run


def counting(checkpoint_fn):
    """Wrap transformers' `_gradient_checkpointing_func` so the inputs it keeps are counted."""

    def run(function, *args, **kwargs):
        hold(*args, *kwargs.values())
        return checkpoint_fn(function, *args, **kwargs)

    return run


GELU_K = math.sqrt(2.0 / math.pi)


class SlimMLP(torch.autograd.Function):
    """GPT-2's MLP (Conv1D -> gelu_new -> Conv1D) saving only its input; backward recomputes the rest.

    Autograd would keep the input, the pre-activation, three gelu intermediates and the activation
    (six B x T x 4d-sized tensors); this keeps one B x T x d tensor and writes the derivative by hand.
    """

    @staticmethod
    def forward(ctx, x, w_fc, b_fc, w_proj, b_proj):
        x2 = x.reshape(-1, x.shape[-1])
        h = torch.addmm(b_fc, x2, w_fc)
        a = 0.5 * h * (1.0 + torch.tanh(GELU_K * (h + 0.044715 * torch.pow(h, 3.0))))
        y = torch.addmm(b_proj, a, w_proj)
        ctx.save_for_backward(x, w_fc, b_fc, w_proj)
        return y.view(*x.shape[:-1], w_proj.shape[1])

    @staticmethod
    def backward(ctx, dy):
        x, w_fc, b_fc, w_proj = ctx.saved_tensors
        x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
        h = torch.addmm(b_fc, x2, w_fc)
        t = torch.tanh(GELU_K * (h + 0.044715 * torch.pow(h, 3.0)))
        a = 0.5 * h * (1.0 + t)
        da = dy2.mm(w_proj.t())
        dh = da * (0.5 * (1.0 + t) + 0.5 * h * (1.0 - t * t) * GELU_K * (1.0 + 3 * 0.044715 * h * h))
        return (dh.mm(w_fc.t()).view_as(x), x2.t().mm(dh), dh.sum(0), a.t().mm(dy2), dy2.sum(0))


def offloading(model: torch.nn.Module, forward):
    """`forward` with every tensor it saves for backward moved to host memory (unless a counter
    that offloads is already active around it, which then does the moving and counts it)."""

    @functools.wraps(forward)
    def run(*args, **kwargs):
        if _ACTIVE and _ACTIVE[-1].offload:
            return forward(*args, **kwargs)
        with SavedTensors(model, offload=True):
            return forward(*args, **kwargs)

    return run


def _slim_mlp_forward(mlp):
    def forward(hidden_states):
        return SlimMLP.apply(hidden_states, mlp.c_fc.weight, mlp.c_fc.bias, mlp.c_proj.weight, mlp.c_proj.bias)

    return forward


def blocks_of(model) -> list[torch.nn.Module]:
    from labcli.engine.distributed import block_classes

    kinds = block_classes(model)
    return [m for m in model.modules() if kinds and isinstance(m, kinds)]


def apply(model: torch.nn.Module, technique: str, every_k: int = 2) -> None:
    """Patch `model` in place for `technique` (see TECHNIQUES)."""
    if technique not in TECHNIQUES:
        raise ValueError(f"unknown technique {technique}")
    blocks = blocks_of(model)
    if technique == "hf-checkpointing":
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        for module in model.modules():
            if hasattr(module, "_gradient_checkpointing_func"):
                module._gradient_checkpointing_func = counting(module._gradient_checkpointing_func)
    elif technique in ("ckpt-every-block", "ckpt-every-k"):
        k = 1 if technique == "ckpt-every-block" else every_k
        for i, block in enumerate(blocks):
            if i % k == 0:
                block.forward = checkpointed(block.forward)
    elif technique == "ckpt-attention":
        for block in blocks:
            block.attn.forward = checkpointed(block.attn.forward)
    elif technique == "custom-mlp":
        for block in blocks:
            mlp = block.mlp
            if getattr(mlp.dropout, "p", 0) or type(mlp.act).__name__ != "NewGELUActivation":
                raise ValueError("custom-mlp reproduces GPT-2's MLP with gelu_new and no dropout")
            mlp.forward = _slim_mlp_forward(mlp)
    elif technique == "offload-cpu":
        setattr(model, OFFLOADS, True)
        model.forward = offloading(model, model.forward)


def loss_of(model, batch) -> torch.Tensor:
    return model(**batch, use_cache=False).loss


class CountingLoss:
    """The engine's loss for a patched model: each forward runs under a counter, whose
    (saved bytes, offloaded bytes) land in `counts`, one entry per forward."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.counts: list[tuple[int, int]] = []

    def __call__(self, forward, batch) -> torch.Tensor:
        with SavedTensors(self.model) as saved:
            loss = loss_of(forward, batch)
        self.counts.append((saved.bytes, saved.offloaded_bytes))
        return loss


def measure_grads(model, batch: dict) -> tuple[dict[str, torch.Tensor], SavedTensors, float]:
    """One forward/backward under the counter: (grads by name, the counter, loss)."""
    model.train()
    model.zero_grad(set_to_none=True)
    with SavedTensors(model) as saved:
        loss = loss_of(model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads, saved, loss.item()


def max_grad_diff(grads: dict, base: dict) -> float:
    if grads.keys() != base.keys():
        return float("inf")
    return max((grads[k] - base[k]).abs().max().item() for k in base)
