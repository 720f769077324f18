"""NF4 kernels (under TRITON_INTERPRET=1 without a GPU) against bitsandbytes on fresh random weights."""

from __future__ import annotations

import bitsandbytes as bnb
import bitsandbytes.functional as bnbf
import pytest
import torch

pytest.importorskip("triton")

from labcli.errors import UserError  # noqa: E402
from labcli.kernels import runtime  # noqa: E402
from labcli.kernels.nf4 import dequantize_nf4, nf4_linear, nf4_matmul  # noqa: E402
from labcli.kernels.nf4.linear4bit import use_bnb, use_lab_nf4  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() and not runtime.interpreting() else "cpu"


def quantized(n, k, dtype=torch.float32, nested=True, blocksize=64, seed=0):
    """A Params4bit as bitsandbytes makes it (quantized on DEVICE), its quant_state set to `dtype`."""
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05
    p = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4", compress_statistics=nested,
                          blocksize=blocksize).to(DEVICE)
    p.quant_state.dtype = dtype
    return w, p


def flat_block_reference(p) -> torch.Tensor:
    """The format written out in PyTorch: element e = code[nibble(e)] * scale[e // blocksize]."""
    qs = p.quant_state
    scales = bnbf.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset if qs.nested else qs.absmax
    packed = p.data.view(torch.uint8).reshape(-1).long()
    codes = torch.stack([packed >> 4, packed & 15], 1).reshape(-1)[:qs.shape[0] * qs.shape[1]]
    blocks = torch.arange(codes.numel(), device=codes.device) // qs.blocksize
    return (qs.code[codes] * scales.float()[blocks]).reshape(qs.shape).to(qs.dtype)


CASES = [  # (N, K, dtype, double quantization, blocksize)
    (192, 256, torch.float32, True, 64),
    (96, 128, torch.float16, True, 64),
    (64, 130, torch.float32, True, 64),  # a row is not a whole number of blocks: blocks straddle rows
    (80, 256, torch.float32, False, 128),
    (64, 512, torch.float16, True, 256),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}-{str(c[2])[6:]}-nested{c[3]}-bs{c[4]}")
def test_dequantize_is_bit_exact_with_bitsandbytes(case):
    n, k, dtype, nested, blocksize = case
    _, p = quantized(n, k, dtype, nested, blocksize, seed=n + k)
    ours = dequantize_nf4(p)
    assert ours.dtype == dtype and ours.shape == (n, k)
    assert torch.equal(ours, bnbf.dequantize_4bit(p.data, p.quant_state))


def test_rows_of_a_multiple_of_16_but_not_64_follow_the_format():
    """bitsandbytes' CPU (AVX-512) dequantize_4bit disagrees with its own format for such rows (K=96,
    352: tiny-llama's MLP). The kernel follows the format, bitsandbytes' pure-PyTorch path and CUDA
    semantics; its result is also the closer one to the weight that was quantized."""
    w, p = quantized(40, 96, seed=7)
    ours = dequantize_nf4(p)
    assert torch.equal(ours, flat_block_reference(p))
    theirs = bnbf.dequantize_4bit(p.data, p.quant_state)
    assert (ours - w.to(DEVICE)).abs().max() <= (theirs - w.to(DEVICE)).abs().max()


@pytest.mark.gpu
@pytest.mark.parametrize("nested", [True, False])
def test_dequantize_bf16_on_gpu(nested):
    """bf16 is compiled-only: the interpreter truncates fp32 -> bf16 instead of rounding."""
    _, p = quantized(4096 // 8, 14336 // 8, torch.bfloat16, nested)
    assert torch.equal(dequantize_nf4(p), bnbf.dequantize_4bit(p.data, p.quant_state))


def relative_error(a, b) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


@pytest.mark.parametrize("rows", [1, 7, 16])
@pytest.mark.parametrize("split_k", [1, 2])
@pytest.mark.parametrize("shape", [(192, 256), (64, 130)], ids=["row-scales", "per-element-scales"])
def test_fused_matmul_matches_matmul_4bit(shape, split_k, rows):
    n, k = shape
    _, p = quantized(n, k, seed=rows)
    g = torch.Generator().manual_seed(split_k)
    x, bias = torch.randn(rows, k, generator=g).to(DEVICE), torch.randn(n, generator=g).to(DEVICE)
    ours = nf4_matmul(x, p, bias=bias, split_k=split_k)
    assert relative_error(ours, bnb.matmul_4bit(x, p.t(), quant_state=p.quant_state, bias=bias)) <= 1e-6


def test_fused_matmul_fp16_rounds_like_bitsandbytes():
    """fp16 weights and products: the same dequantized fp16 W, fp32 accumulation in another order."""
    _, p = quantized(128, 512, torch.float16, seed=3)
    x = torch.randn(4, 512, generator=torch.Generator().manual_seed(4)).to(DEVICE, torch.float16)
    ours = nf4_matmul(x, p)
    assert ours.dtype == torch.float16
    assert relative_error(ours, bnb.matmul_4bit(x, p.t(), quant_state=p.quant_state)) <= 2e-3


@pytest.mark.parametrize("rows", [3, 40])  # the fused decode kernel, and dequantize + matmul
def test_nf4_linear_gradients_match_bitsandbytes(rows):
    _, p = quantized(96, 128, seed=5)
    g = torch.Generator().manual_seed(6)
    x, bias, dy = torch.randn(rows, 128, generator=g), torch.randn(96, generator=g), torch.randn(rows, 96, generator=g)
    grads = []
    for fn in (lambda a, b: nf4_linear(a, p, bias=b),
               lambda a, b: bnb.matmul_4bit(a, p.t(), quant_state=p.quant_state, bias=b)):
        a, b = x.clone().to(DEVICE).requires_grad_(), bias.clone().to(DEVICE).requires_grad_()
        out = fn(a, b)
        out.backward(dy.to(DEVICE))
        grads.append((out, a.grad, b.grad))
    for ours, theirs in zip(*grads):
        assert relative_error(ours, theirs) <= 1e-6


def test_linear4bit_route_swaps_and_restores():
    layer = bnb.nn.Linear4bit(128, 64, compute_dtype=torch.float32, quant_type="nf4")
    layer.load_state_dict(torch.nn.Linear(128, 64).state_dict())
    layer = layer.to(DEVICE)
    layer.support_avx512bf16_for_cpu = False
    x = torch.randn(5, 128, generator=torch.Generator().manual_seed(8)).to(DEVICE)
    with torch.no_grad():
        theirs = layer(x)
        assert use_lab_nf4(layer) == 1 and isinstance(layer, bnb.nn.Linear4bit)
        assert relative_error(layer(x), theirs) <= 1e-6
        assert use_bnb(layer) == 1 and type(layer) is bnb.nn.Linear4bit


def test_refuses_what_it_cannot_read():
    _, p = quantized(64, 128)
    with pytest.raises(UserError, match="decode kernel"):
        nf4_matmul(torch.randn(17, 128).to(DEVICE), p)
    with pytest.raises(UserError, match="features"):
        nf4_matmul(torch.randn(1, 64).to(DEVICE), p)
    fp4 = bnb.nn.Params4bit(torch.randn(64, 128), requires_grad=False, quant_type="fp4").to(DEVICE)
    with pytest.raises(UserError, match="fp4"):
        dequantize_nf4(fp4)
