"""FlashAttention-2 kernels (under TRITON_INTERPRET=1 without a GPU) against SDPA and autograd."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")

from labcli.errors import UserError  # noqa: E402
from labcli.kernels import runtime  # noqa: E402
from labcli.kernels.flash_attention import flash_attention, flash_attention_varlen  # noqa: E402
from labcli.kernels.flash_attention.reference import attention_math, attention_tiled, causal_keep  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() and not runtime.interpreting() else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 3e-2}


def sdpa_with_grads(q, k, v, do, causal):
    """Output and gradients of torch SDPA in float32 on the same (rounded) inputs, k/v repeated for GQA."""
    qf, kf, vf = (t.detach().float().requires_grad_() for t in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    mask = causal_keep(q.shape[2], k.shape[2], q.device) if causal else None
    out = torch.nn.functional.scaled_dot_product_attention(qf, kf.repeat_interleave(rep, 1),
                                                           vf.repeat_interleave(rep, 1), attn_mask=mask)
    out.backward(do.float())
    return out, qf.grad, kf.grad, vf.grad


def ours_with_grads(q, k, v, do, causal):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = flash_attention(q, k, v, causal=causal)
    out.backward(do)
    return out, q.grad, k.grad, v.grad


def random_qkv(batch, heads, kv_heads, n_q, n_k, dim, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    make = lambda h, n: torch.randn(batch, h, n, dim, generator=g).to(DEVICE, dtype)  # noqa: E731
    return make(heads, n_q), make(kv_heads, n_k), make(kv_heads, n_k), make(heads, n_q)


SHAPES = [  # (batch, heads, kv heads, Nq, Nk, head dim): ragged N, GQA, both tuned head dims, Nq != Nk
    (2, 2, 1, 70, 70, 64),
    (1, 2, 2, 64, 64, 128),
    (1, 2, 1, 40, 100, 64),
    (1, 2, 2, 50, 20, 32),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_and_backward_match_sdpa(shape, causal, dtype):
    q, k, v, do = random_qkv(*shape, dtype, seed=hash((shape, causal)) % 2**31)
    expected = sdpa_with_grads(q, k, v, do, causal)
    got = ours_with_grads(q, k, v, do, causal)
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, expected):
        assert a.dtype == dtype
        err = (a.float() - b).abs().max().item()
        assert err <= TOL[dtype], f"{name}: max error {err:.2e} > {TOL[dtype]}"


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
def test_bf16_on_gpu(causal):
    """bf16 runs only compiled: the interpreter multiplies bf16's raw uint16 bits."""
    q, k, v, do = random_qkv(2, 4, 2, 200, 200, 128, torch.bfloat16, seed=1)
    for a, b in zip(ours_with_grads(q, k, v, do, causal), sdpa_with_grads(q, k, v, do, causal)):
        assert (a.float() - b).abs().max().item() <= TOL[torch.bfloat16]


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_equals_each_sequence_alone(causal):
    lengths = [5, 33, 17, 40]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    g = torch.Generator().manual_seed(3)
    q, do = (torch.randn(sum(lengths), 4, 64, generator=g).to(DEVICE) for _ in range(2))
    k, v = (torch.randn(sum(lengths), 2, 64, generator=g).to(DEVICE) for _ in range(2))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = flash_attention_varlen(*leaves, cu, cu, max(lengths), max(lengths), causal=causal)
    out.backward(do)
    for i, (start, end) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        one = [t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v, do)]
        ref = sdpa_with_grads(*one, causal)
        got = [out[start:end]] + [leaf.grad[start:end] for leaf in leaves]
        for a, b in zip(got, ref):
            assert (a - b[0].transpose(0, 1)).abs().max().item() <= 1e-5, f"sequence {i}"


def test_tiled_reference_is_exact_attention_with_its_logsumexp():
    q, k, v, _ = random_qkv(1, 2, 2, 90, 90, 32, torch.float32, seed=4)
    for causal in (False, True):
        out, lse = attention_tiled(q, k, v, causal, block_m=32, block_n=16)
        assert (out - attention_math(q, k, v, causal)).abs().max().item() <= 1e-5
        scores = q @ k.transpose(-2, -1) / math.sqrt(32)
        if causal:
            scores = scores.masked_fill(~causal_keep(90, 90), float("-inf"))
        assert (lse - torch.logsumexp(scores, -1)).abs().max().item() <= 1e-5


def test_bad_inputs_are_one_line_errors():
    q, k, v, _ = random_qkv(1, 2, 2, 16, 16, 32, torch.float32, seed=5)
    with pytest.raises(UserError, match="one dtype"):
        flash_attention(q, k.half(), v)
    with pytest.raises(UserError, match="head dims"):
        flash_attention(q, k[..., :16], v)
    with pytest.raises(UserError, match="do not split"):
        flash_attention(q[:, :1].expand(1, 3, 16, 32), k, v)


def test_runs_when_triton_was_imported_before_the_interpreter_was_switched_on():
    """bitsandbytes imports triton; kernels must not rely on tl.zeros/tl.sum (jit functions made before
    TRITON_INTERPRET was set)."""
    if not runtime.interpreting():
        pytest.skip("about the interpreter")
    code = ("import bitsandbytes, torch\n"
            "from labcli.kernels.flash_attention import flash_attention\n"
            "q = torch.randn(1, 1, 20, 16, requires_grad=True)\n"
            "flash_attention(q, q, q, causal=True).sum().backward()\n"
            "print('ok', float(q.grad.abs().sum()) > 0)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ok True" in proc.stdout
