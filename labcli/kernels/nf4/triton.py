"""bitsandbytes NF4 (with double quantization) in Triton: dequantize, and a fused dequantize-matmul.

bitsandbytes stores a 4-bit weight W (N, K) as `Params4bit`: the row-major flattened W, two 4-bit
codes per byte (element 2i in the high nibble of byte i, 2i+1 in the low one), one scale per block
of `blocksize` (64) consecutive elements. With double quantization (`compress_statistics`, QLoRA's
default) those fp32 scales are themselves quantized: `quant_state.absmax` holds uint8 codes into
`state2.code` (a 256-entry dynamic map), with one fp32 `state2.absmax` per 256 scales and a global
`offset` (the mean that was subtracted). So

    scale[b] = state2.code[absmax[b]] * state2.absmax[b // 256] + offset
    W[e]     = code[nibble(e)] * scale[e // blocksize]      (fp32, then cast to the output dtype)

which is what bitsandbytes computes in two CUDA launches (8-bit dequantize of the scales, then
4-bit dequantize); here it is one kernel reading `Params4bit.data` and `quant_state` as stored.
The multiply and the add of the scale are kept apart (fp fusion off when compiled), so the result
is bit-identical to `bitsandbytes.functional.dequantize_4bit`.

`nf4_matmul` fuses the dequantization into the matmul for the decode case (at most 16 rows): each
program dequantizes a (BLOCK_N, BLOCK_K) tile of W in registers and never writes it to memory;
SPLIT_K programs share one output tile's K range when N alone gives too few programs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from labcli.errors import UserError
from labcli.kernels import runtime


@triton.jit
def _scales(ABSMAX, CODE2, ABSMAX2, offset, blk, mask, BLOCKSIZE2: tl.constexpr, NESTED: tl.constexpr):
    """fp32 scale of each 4-bit block index in `blk`, undoing the double quantization."""
    if NESTED:
        q = tl.load(ABSMAX + blk, mask=mask, other=0).to(tl.int32)
        scale = tl.load(CODE2 + q) * tl.load(ABSMAX2 + blk // BLOCKSIZE2, mask=mask, other=0.0)
        scale = scale + offset  # a separate add, as bitsandbytes does it (no fma)
    else:
        scale = tl.load(ABSMAX + blk, mask=mask, other=0.0)
    return scale


@triton.jit
def _dequant_kernel(W, ABSMAX, CODE2, ABSMAX2, CODE, OUT, offset, n, n_blocks,
                    BLOCKSIZE: tl.constexpr, BLOCKSIZE2: tl.constexpr, NESTED: tl.constexpr, ROWS: tl.constexpr):
    """One program: ROWS quantization blocks, laid out as a (ROWS, BLOCKSIZE) tile; one scale per row."""
    HALF: tl.constexpr = BLOCKSIZE // 2
    blk = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    blk_ok = blk < n_blocks
    byte_idx = blk[:, None] * HALF + tl.arange(0, HALF)[None, :]
    byte_ok = blk_ok[:, None] & (byte_idx < (n + 1) // 2)
    packed = tl.load(W + byte_idx, mask=byte_ok, other=0).to(tl.int32)
    scale = _scales(ABSMAX, CODE2, ABSMAX2, offset, blk, blk_ok, BLOCKSIZE2, NESTED)
    high = tl.load(CODE + (packed >> 4)) * scale[:, None]
    low = tl.load(CODE + (packed & 15)) * scale[:, None]
    vals = tl.reshape(tl.join(high, low), [ROWS, BLOCKSIZE])  # element 2i from the high nibble of byte i
    out_idx = blk[:, None] * BLOCKSIZE + tl.arange(0, BLOCKSIZE)[None, :]
    tl.store(OUT + out_idx, vals.to(OUT.dtype.element_ty), mask=blk_ok[:, None] & (out_idx < n))


@triton.jit
def _matmul_kernel(X, W, ABSMAX, CODE2, ABSMAX2, CODE, PART, offset, M, N, K, k_split, stride_xm,
                   BLOCKSIZE: tl.constexpr, BLOCKSIZE2: tl.constexpr, NESTED: tl.constexpr, ROW_SCALES: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """PART[pid_k] = X[:, K range] @ W[N tile, K range]^T, with W dequantized tile by tile in registers.

    ROW_SCALES (K a multiple of blocksize, BLOCK_K dividing it): a K tile of one row lies in one
    quantization block, so each row needs one scale and each byte is loaded once; otherwise every
    element finds its own byte, nibble and block from its flat index n*K + k."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < M
    col_ok = cols < N
    base = cols.to(tl.int64)[:, None] * K  # flat index of W[n, 0]
    acc = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)
    k_end = tl.minimum(pid_k * k_split + k_split, K)
    for k0 in range(pid_k * k_split, k_end, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(X + rows[:, None] * stride_xm + ks[None, :], mask=row_ok[:, None] & (ks < k_end)[None, :],
                    other=0.0)
        if ROW_SCALES:
            byte_idx = (base + k0) // 2 + tl.arange(0, BLOCK_K // 2)[None, :]
            packed = tl.load(W + byte_idx, mask=col_ok[:, None], other=0).to(tl.int32)
            scale = _scales(ABSMAX, CODE2, ABSMAX2, offset, (cols.to(tl.int64) * K + k0) // BLOCKSIZE, col_ok,
                            BLOCKSIZE2, NESTED)
            high = tl.load(CODE + (packed >> 4)) * scale[:, None]
            low = tl.load(CODE + (packed & 15)) * scale[:, None]
            w = tl.reshape(tl.join(high, low), [BLOCK_N, BLOCK_K])
        else:
            flat = base + ks[None, :]
            ok = col_ok[:, None] & (ks < k_end)[None, :]
            packed = tl.load(W + flat // 2, mask=ok, other=0).to(tl.int32)
            nibble = tl.where(flat % 2 == 0, packed >> 4, packed & 15)
            w = tl.load(CODE + nibble) * _scales(ABSMAX, CODE2, ABSMAX2, offset, flat // BLOCKSIZE, ok,
                                                 BLOCKSIZE2, NESTED)
        # W rounded to the input dtype first, as bitsandbytes' dequantize-then-matmul does
        acc = tl.dot(x, tl.trans(w.to(x.dtype)), acc, input_precision=PRECISION)
    part = PART + pid_k.to(tl.int64) * M * N + rows[:, None] * N + cols[None, :]
    tl.store(part, acc, mask=row_ok[:, None] & col_ok[None, :])


# ---------------------------------------------------------------------------------------------

class NF4Weight:
    """The tensors of one Params4bit + quant_state, viewed as the kernels read them (nothing copied)."""

    def __init__(self, weight, quant_state=None):
        qs = quant_state if quant_state is not None else getattr(weight, "quant_state", None)
        if qs is None:
            raise UserError("this weight has no quant_state", "pass a bitsandbytes Params4bit (a Linear4bit's .weight)")
        if qs.quant_type != "nf4":
            raise UserError(f"lab-nf4 reads NF4 weights, this one is {qs.quant_type}", "quantize with quant_type='nf4'")
        if getattr(qs, "packing_format_for_cpu", False):
            raise UserError("this weight was repacked into bitsandbytes' CPU inference layout",
                            "load it with labcli.models.load_model (which keeps the trainable layout)")
        if len(qs.shape) != 2:
            raise UserError(f"lab-nf4 needs a 2-D weight, quant_state.shape is {tuple(qs.shape)}", "quantize a matrix")
        data = weight.data if hasattr(weight, "data") else weight
        self.packed = data.contiguous().view(torch.uint8).reshape(-1)
        self.shape, self.dtype, self.blocksize, self.code = tuple(qs.shape), qs.dtype, qs.blocksize, qs.code
        self.nested = bool(qs.nested)
        if self.nested:
            if qs.absmax.dtype != torch.uint8:
                raise UserError(f"double-quantized scales are {qs.absmax.dtype}, expected uint8", "requantize the model")
            self.absmax, self.code2 = qs.absmax, qs.state2.code.float()
            self.absmax2, self.blocksize2 = qs.state2.absmax.float(), qs.state2.blocksize
            self.offset = float(qs.offset)
        else:
            self.absmax = qs.absmax.float()
            self.code2 = self.absmax2 = self.absmax  # unused placeholders (pointers must be tensors)
            self.blocksize2, self.offset = 256, 0.0
        runtime.check_device(self.packed)

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def args(self):
        return self.packed, self.absmax, self.code2, self.absmax2, self.code


def _compiled_options() -> dict:
    return {} if runtime.interpreting() else {"enable_fp_fusion": False}


def dequantize_nf4(weight, quant_state=None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The (N, K) weight in `dtype` (default: quant_state.dtype), bit-identical to bnb's dequantize_4bit."""
    w = weight if isinstance(weight, NF4Weight) else NF4Weight(weight, quant_state)
    out = torch.empty(w.shape, dtype=dtype or w.dtype, device=w.packed.device)
    n_blocks = triton.cdiv(w.numel, w.blocksize)
    rows = max(1, 2048 // w.blocksize)  # ~2048 elements per program
    _dequant_kernel[(triton.cdiv(n_blocks, rows),)](
        *w.args()[:4], w.code, out, w.offset, w.numel, n_blocks,
        BLOCKSIZE=w.blocksize, BLOCKSIZE2=w.blocksize2, NESTED=w.nested, ROWS=rows, **_compiled_options())
    return out


def _split_k(tiles: int, k: int, block_k: int) -> int:
    """Enough programs to fill a GPU (~2 per SM), each keeping at least 4 K tiles."""
    if runtime.interpreting() or not torch.cuda.is_available():
        return 1
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    split = 1
    while tiles * split < 2 * sms and k // (split * 2) >= 4 * block_k:
        split *= 2
    return split


FUSED_MAX_ROWS = 16


def nf4_matmul(x: torch.Tensor, weight, quant_state=None, bias: torch.Tensor | None = None,
               split_k: int | None = None, block_n: int | None = None, block_k: int | None = None) -> torch.Tensor:
    """x (..., K) @ W^T (+ bias) -> (..., N) in x's dtype, dequantizing W inside the matmul.

    For at most FUSED_MAX_ROWS rows (decode). split_k/block_n/block_k are for tests and the bench."""
    w = weight if isinstance(weight, NF4Weight) else NF4Weight(weight, quant_state)
    n, k = w.shape
    if x.shape[-1] != k:
        raise UserError(f"x has {x.shape[-1]} features, the NF4 weight expects {k}", "check the layer")
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    if m > FUSED_MAX_ROWS:
        raise UserError(f"nf4_matmul is the decode kernel ({m} rows > {FUSED_MAX_ROWS})", "use nf4_linear")
    runtime.check_device(x2)
    block_n = block_n or (32 if runtime.interpreting() else 64)
    block_k = block_k or min(64, w.blocksize)
    row_scales = k % w.blocksize == 0 and w.blocksize % block_k == 0
    split = split_k or _split_k(triton.cdiv(n, block_n), k, block_k)
    k_split = triton.cdiv(triton.cdiv(k, split), block_k) * block_k
    split = triton.cdiv(k, k_split)
    part = torch.empty((split, m, n), dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(n, block_n), triton.cdiv(m, 16), split)
    _matmul_kernel[grid](x2, *w.args(), part, w.offset, m, n, k, k_split, x2.stride(0),
                         BLOCKSIZE=w.blocksize, BLOCKSIZE2=w.blocksize2, NESTED=w.nested, ROW_SCALES=row_scales,
                         BLOCK_M=16, BLOCK_N=block_n, BLOCK_K=block_k,
                         PRECISION="ieee" if x.dtype == torch.float32 else None, **_compiled_options())
    out = part[0] if split == 1 else part.sum(0)
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype).reshape(*x.shape[:-1], n)


class NF4Linear(torch.autograd.Function):
    """y = x W^T + b with a frozen NF4 W: fused kernel for decode-sized x, dequantize + matmul otherwise.
    The backward gives dx = dy W (W dequantized again, as bitsandbytes does) and db; W gets no gradient."""

    @staticmethod
    def forward(ctx, x, bias, w: NF4Weight):
        rows = x.numel() // x.shape[-1]
        if rows <= FUSED_MAX_ROWS:
            y = nf4_matmul(x, w, bias=bias)
        else:
            y = torch.nn.functional.linear(x, dequantize_nf4(w, dtype=x.dtype), bias)
        ctx.w = w
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        dx = db = None
        if ctx.needs_input_grad[0]:
            dx = torch.matmul(dy, dequantize_nf4(ctx.w, dtype=dy.dtype))
        if ctx.needs_input_grad[1]:
            db = dy.reshape(-1, dy.shape[-1]).sum(0, dtype=ctx.bias_dtype)
        return dx, db, None


def nf4_linear(x: torch.Tensor, weight, quant_state=None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable (in x and bias) linear layer on a bitsandbytes NF4 weight."""
    w = NF4Weight(weight, quant_state)
    return NF4Linear.apply(x, bias, w)
