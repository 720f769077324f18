"""FlashAttention-2 forward and backward in Triton, with a torch.autograd.Function so models train on it.

One program of the forward owns a block of BLOCK_M query rows of one (sequence, head) and walks
the key/value blocks with the online softmax of `reference.attention_tiled`; scores live only in
registers, and HBM sees q, k, v, the output and one log-sum-exp per row. The backward (FA2
section 3.1.2) recomputes each probability tile from that log-sum-exp: one kernel owns a key block
and accumulates dK, dV over the query blocks that see it, a second owns a query block and
accumulates dQ (two kernels, no atomics).

Layouts: dense q (B, H, Nq, D), k/v (B, Hkv, Nk, D) with any strides whose last is 1 (transformers
passes transposed views); grouped-query attention reads k/v head h // (H / Hkv) directly, no
repeat. Padding-free variable lengths: q (total_q, H, D), k/v (total_k, Hkv, D) with cumulative
sequence starts `cu_seqlens_q/k` (B + 1, int32), as flash-attn's varlen API. Causal masks align
the diagonal bottom-right (query i sees keys j <= i + Nk - Nq). Head dims up to 256 (padded to a
power of two inside the kernel; 64 and 128 are the tuned ones). No dropout, no attention bias.

Pointer arithmetic only (no tl.make_block_ptr, gone in triton 3.9 while CUDA torch wheels pin 3.8).
Under TRITON_INTERPRET=1 the launchers pick one small config; on CUDA they autotune. In fp32
`tl.dot` uses ieee precision (not TF32), so fp32 results match PyTorch to ~1e-6.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from labcli.kernels import runtime
from labcli.kernels.triton_ops import row_max, row_sum

LOG2E = 1.4426950408889634  # scores are kept in base 2: exp(x) = exp2(x * log2(e))


@triton.jit
def _seq_bounds(CU_Q, CU_K, b, n_q, n_k, VARLEN: tl.constexpr):
    """(first row, length) of sequence b in q and in k: from cu_seqlens, or the dense sizes."""
    if VARLEN:
        q0 = tl.load(CU_Q + b)
        q_len = tl.load(CU_Q + b + 1) - q0
        k0 = tl.load(CU_K + b)
        k_len = tl.load(CU_K + b + 1) - k0
    else:
        q0 = 0
        q_len = n_q
        k0 = 0
        k_len = n_k
    return q0, q_len, k0, k_len


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, lo, hi, offs_m, offs_n, offs_d, d_ok,
               k_len, diag, qk_scale, MASKED: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr,
               PRECISION: tl.constexpr):
    """Fold key blocks [lo, hi) into the running (acc, l, m). MASKED: the blocks crossing the causal
    diagonal or the sequence end; the others skip the compare-and-select."""
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        col_ok = cols < k_len
        kt = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None], mask=col_ok[None, :] & d_ok[:, None],
                     other=0.0)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
        if MASKED:
            keep = col_ok[None, :]
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None] + diag)
            s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, row_max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen no key yet
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)  # rescales the sums taken under the old max
        l_i = l_i * alpha + row_sum(p, 1)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :], mask=col_ok[:, None] & d_ok[None, :],
                    other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, CU_Q, CU_K,
                stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om, stride_lb, stride_lh,
                n_q, n_k, n_heads, qk_scale,
                GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, VARLEN: tl.constexpr, PRECISION: tl.constexpr):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    q0, q_len, k0, k_len = _seq_bounds(CU_Q, CU_K, b, n_q, n_k, VARLEN)
    if start_m * BLOCK_M >= q_len:
        return
    b64 = b.to(tl.int64)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < q_len
    d_ok = offs_d < HEAD_DIM
    q_ptrs = Q + b64 * stride_qb + h * stride_qh + (q0 + offs_m)[:, None] * stride_qm + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    k_base = K + b64 * stride_kb + (h // GROUP) * stride_kh + k0 * stride_kn
    v_base = V + b64 * stride_vb + (h // GROUP) * stride_vh + k0 * stride_vn

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.full([BLOCK_M], 0.0, tl.float32)
    acc = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    diag = k_len - q_len  # query i sees keys j <= i + diag
    if CAUSAL:
        # blocks before `lo` are seen in full by every row of this block; [lo, hi) cross the diagonal
        lo = tl.minimum(tl.maximum(start_m * BLOCK_M + diag + 1, 0), k_len) // BLOCK_N * BLOCK_N
        hi = tl.minimum(start_m * BLOCK_M + BLOCK_M + diag, k_len)
    else:
        lo = k_len // BLOCK_N * BLOCK_N
        hi = k_len
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, 0, lo, offs_m, offs_n,
                               offs_d, d_ok, k_len, diag, qk_scale, False, CAUSAL, BLOCK_N, PRECISION)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, lo, hi, offs_m, offs_n,
                               offs_d, d_ok, k_len, diag, qk_scale, True, CAUSAL, BLOCK_N, PRECISION)

    empty = l_i == 0.0  # a causal row with no key at all (Nq > Nk): output 0, and p = 0 in the backward
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    o_ptrs = O + b64 * stride_ob + h * stride_oh + (q0 + offs_m)[:, None] * stride_om + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    lse = tl.where(empty, float("inf"), m_i + tl.log2(l_safe))
    tl.store(LSE + b64 * stride_lb + h * stride_lh + q0 + offs_m, lse, mask=row_ok)


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, CU_Q, CU_K,
                     stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                     stride_vb, stride_vh, stride_vn, stride_dob, stride_doh, stride_dom, stride_lb, stride_lh,
                     stride_dkb, stride_dkh, stride_dkn, stride_dvb, stride_dvh, stride_dvn,
                     n_q, n_k, n_kv_heads, qk_scale, sm_scale,
                     GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, VARLEN: tl.constexpr, PRECISION: tl.constexpr):
    """One program: a key block of one kv head; sums dK, dV over every query head of its group."""
    start_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_kv_heads
    hk = bh % n_kv_heads
    q0, q_len, k0, k_len = _seq_bounds(CU_Q, CU_K, b, n_q, n_k, VARLEN)
    if start_n * BLOCK_N >= k_len:
        return
    b64 = b.to(tl.int64)
    cols = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    col_ok = cols < k_len
    d_ok = offs_d < HEAD_DIM
    kv_mask = col_ok[:, None] & d_ok[None, :]
    k = tl.load(K + b64 * stride_kb + hk * stride_kh + (k0 + cols)[:, None] * stride_kn + offs_d[None, :],
                mask=kv_mask, other=0.0)
    v = tl.load(V + b64 * stride_vb + hk * stride_vh + (k0 + cols)[:, None] * stride_vn + offs_d[None, :],
                mask=kv_mask, other=0.0)
    dk = tl.full([BLOCK_N, BLOCK_D], 0.0, tl.float32)
    dv = tl.full([BLOCK_N, BLOCK_D], 0.0, tl.float32)
    diag = k_len - q_len
    # causal: the first query row that sees key start_n*BLOCK_N is start_n*BLOCK_N - diag
    m_lo = tl.maximum(start_n * BLOCK_N - diag, 0) // BLOCK_M * BLOCK_M if CAUSAL else 0
    for g in range(GROUP):
        h = hk * GROUP + g
        q_base = Q + b64 * stride_qb + h * stride_qh + q0 * stride_qm
        do_base = DO + b64 * stride_dob + h * stride_doh + q0 * stride_dom
        lse_base = LSE + b64 * stride_lb + h * stride_lh + q0
        delta_base = DELTA + b64 * stride_lb + h * stride_lh + q0
        for start_m in range(m_lo, q_len, BLOCK_M):
            rows = start_m + offs_m
            row_ok = rows < q_len
            q_mask = row_ok[:, None] & d_ok[None, :]
            q = tl.load(q_base + rows[:, None] * stride_qm + offs_d[None, :], mask=q_mask, other=0.0)
            do = tl.load(do_base + rows[:, None] * stride_dom + offs_d[None, :], mask=q_mask, other=0.0)
            lse = tl.load(lse_base + rows, mask=row_ok, other=0.0)
            delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
            # the transposed probability tile P^T (BLOCK_N, BLOCK_M), rebuilt from the saved lse
            st = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale
            keep = col_ok[:, None] & row_ok[None, :]
            if CAUSAL:
                keep = keep & (cols[:, None] <= rows[None, :] + diag)
            pt = tl.where(keep, tl.exp2(st - lse[None, :]), 0.0)
            dv += tl.dot(pt.to(do.dtype), do, input_precision=PRECISION)
            dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)
            dst = pt * (dpt - delta[None, :])  # dS = P * (dP - rowsum(dO * O))
            dk += tl.dot(dst.to(q.dtype), q, input_precision=PRECISION)
    dk = dk * sm_scale
    tl.store(DK + b64 * stride_dkb + hk * stride_dkh + (k0 + cols)[:, None] * stride_dkn + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + b64 * stride_dvb + hk * stride_dvh + (k0 + cols)[:, None] * stride_dvn + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, CU_Q, CU_K,
                   stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                   stride_vb, stride_vh, stride_vn, stride_dob, stride_doh, stride_dom, stride_lb, stride_lh,
                   stride_dqb, stride_dqh, stride_dqm,
                   n_q, n_k, n_heads, qk_scale, sm_scale,
                   GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, VARLEN: tl.constexpr, PRECISION: tl.constexpr):
    """One program: a query block of one head; dQ = sum over key blocks of dS K * scale."""
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // n_heads
    h = bh % n_heads
    q0, q_len, k0, k_len = _seq_bounds(CU_Q, CU_K, b, n_q, n_k, VARLEN)
    if start_m * BLOCK_M >= q_len:
        return
    b64 = b.to(tl.int64)
    rows = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = rows < q_len
    d_ok = offs_d < HEAD_DIM
    q_mask = row_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b64 * stride_qb + h * stride_qh + (q0 + rows)[:, None] * stride_qm + offs_d[None, :],
                mask=q_mask, other=0.0)
    do = tl.load(DO + b64 * stride_dob + h * stride_doh + (q0 + rows)[:, None] * stride_dom + offs_d[None, :],
                 mask=q_mask, other=0.0)
    lse = tl.load(LSE + b64 * stride_lb + h * stride_lh + q0 + rows, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + b64 * stride_lb + h * stride_lh + q0 + rows, mask=row_ok, other=0.0)
    k_base = K + b64 * stride_kb + (h // GROUP) * stride_kh + k0 * stride_kn
    v_base = V + b64 * stride_vb + (h // GROUP) * stride_vh + k0 * stride_vn
    diag = k_len - q_len
    hi = tl.minimum(start_m * BLOCK_M + BLOCK_M + diag, k_len) if CAUSAL else k_len
    dq = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    for start_n in range(0, hi, BLOCK_N):
        cols = start_n + offs_n
        col_ok = cols < k_len
        kv_mask = col_ok[:, None] & d_ok[None, :]
        k = tl.load(k_base + cols[:, None] * stride_kn + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        keep = row_ok[:, None] & col_ok[None, :]
        if CAUSAL:
            keep = keep & (cols[None, :] <= rows[:, None] + diag)
        p = tl.where(keep, tl.exp2(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    dq = dq * sm_scale
    tl.store(DQ + b64 * stride_dqb + h * stride_dqh + (q0 + rows)[:, None] * stride_dqm + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=q_mask)


# ---------------------------------------------------------------------------------------------
# Launch configs. On CUDA a short autotune list per kernel (A100/H100-sized tiles; a config that
# needs more shared memory than the GPU has is skipped by the autotuner); interpreted, one small
# config, since the interpreter cannot autotune and numpy time grows with the number of programs.

def _cfg(bm, bn, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


FWD_CONFIGS = [_cfg(128, 64, 4, 3), _cfg(128, 64, 8, 3), _cfg(128, 128, 8, 3), _cfg(64, 64, 4, 3), _cfg(64, 32, 4, 4)]
BWD_CONFIGS = [_cfg(64, 64, 4, 2), _cfg(64, 128, 8, 2), _cfg(128, 64, 8, 2), _cfg(32, 64, 4, 3)]
INTERPRET_BLOCK = {"BLOCK_M": 32, "BLOCK_N": 32}
TUNE_KEY = ["n_q", "n_k", "HEAD_DIM", "CAUSAL", "VARLEN", "GROUP"]

_tuned = {}


def _launcher(kernel, configs):
    """The kernel itself when interpreting (config given by the caller), else its autotuned wrapper."""
    if runtime.interpreting():
        return kernel
    if kernel not in _tuned:
        _tuned[kernel] = triton.autotune(configs=configs, key=TUNE_KEY)(kernel)
    return _tuned[kernel]


def _launch(kernel, configs, rows, programs, block, *args, **kwargs):
    """Grid: one program per `block` of `rows` (BLOCK_M query rows or BLOCK_N keys) per (sequence, head)."""
    if runtime.interpreting():
        kernel[(triton.cdiv(rows, INTERPRET_BLOCK[block]), programs)](*args, **kwargs, **INTERPRET_BLOCK)
    else:
        _launcher(kernel, configs)[lambda meta: (triton.cdiv(rows, meta[block]), programs)](*args, **kwargs)


# ---------------------------------------------------------------------------------------------

def _precision(dtype: torch.dtype):
    return "ieee" if dtype == torch.float32 else None  # fp32: no TF32 rounding; fp16/bf16: the default


def _last_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


class _Layout:
    """Strides and sizes the kernels take, for the dense (B, H, N, D) or the varlen (total, H, D) layout."""

    def __init__(self, q, k, cu_q, cu_k, max_q, max_k):
        self.varlen = cu_q is not None
        if self.varlen:
            self.batch, self.n_q, self.n_k = cu_q.numel() - 1, max_q, max_k
            self.heads, self.kv_heads = q.shape[1], k.shape[1]
        else:
            self.batch, self.heads, self.n_q, _ = q.shape
            self.kv_heads, self.n_k = k.shape[1], k.shape[2]
        self.head_dim = q.shape[-1]
        self.group = self.heads // self.kv_heads

    def strides(self, t: torch.Tensor) -> tuple[int, int, int]:
        """(batch, head, token) strides; the batch stride is 0 in the varlen layout."""
        if self.varlen:
            return 0, t.stride(1), t.stride(0)
        return t.stride(0), t.stride(1), t.stride(2)

    def rows(self, t: torch.Tensor) -> tuple[int, int]:
        """(batch, head) strides of an lse/delta tensor: (B, H, Nq) dense, (H, total_q) varlen."""
        return (0, t.stride(0)) if self.varlen else (t.stride(0), t.stride(1))


def _check(q, k, v, cu_q, cu_k):
    from labcli.errors import UserError

    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise UserError(f"lab-flash needs q, k, v of one dtype among fp16/bf16/fp32 (got {q.dtype}, {k.dtype}, "
                        f"{v.dtype})", "cast them to one dtype")
    if q.shape[-1] != k.shape[-1] or v.shape[-1] != q.shape[-1] or q.shape[-1] > 256:
        raise UserError(f"lab-flash needs equal q/k/v head dims <= 256 (got {q.shape[-1]}, {k.shape[-1]}, "
                        f"{v.shape[-1]})", "use sdpa for this model")
    heads, kv_heads = q.shape[1], k.shape[1]  # dim 1 is heads in both layouts
    if heads % kv_heads:
        raise UserError(f"{heads} query heads do not split into {kv_heads} key/value heads", "check the model")
    runtime.check_device(q, k, v, cu_q, cu_k)


def _forward(q, k, v, causal, scale, cu_q, cu_k, max_q, max_k):
    lay = _Layout(q, k, cu_q, cu_k, max_q, max_k)
    if lay.varlen:
        o = torch.empty_like(q)
        lse = torch.empty((lay.heads, q.shape[0]), dtype=torch.float32, device=q.device)
    else:
        # (B, Nq, H, D) memory seen as (B, H, Nq, D): transformers' final transpose(1, 2) is then free
        o = torch.empty((lay.batch, lay.n_q, lay.heads, lay.head_dim), dtype=q.dtype, device=q.device).transpose(1, 2)
        lse = torch.empty((lay.batch, lay.heads, lay.n_q), dtype=torch.float32, device=q.device)
    _launch(_fwd_kernel, FWD_CONFIGS, lay.n_q, lay.batch * lay.heads, "BLOCK_M",
            q, k, v, o, lse, cu_q, cu_k, *lay.strides(q), *lay.strides(k), *lay.strides(v), *lay.strides(o),
            *lay.rows(lse), lay.n_q, lay.n_k, lay.heads, scale * LOG2E,
            GROUP=lay.group, HEAD_DIM=lay.head_dim, BLOCK_D=max(16, triton.next_power_of_2(lay.head_dim)),
            CAUSAL=causal, VARLEN=lay.varlen, PRECISION=_precision(q.dtype))
    return o, lse


def _backward(do, q, k, v, o, lse, causal, scale, cu_q, cu_k, max_q, max_k):
    lay = _Layout(q, k, cu_q, cu_k, max_q, max_k)
    do = _last_contiguous(do)
    # delta = rowsum(dO * O), the softmax Jacobian's correction term; same layout as lse
    delta = (do.float() * o.float()).sum(-1)
    delta = delta.t().contiguous() if lay.varlen else delta.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    common = dict(GROUP=lay.group, HEAD_DIM=lay.head_dim, BLOCK_D=max(16, triton.next_power_of_2(lay.head_dim)),
                  CAUSAL=causal, VARLEN=lay.varlen, PRECISION=_precision(q.dtype))
    inputs = (*lay.strides(q), *lay.strides(k), *lay.strides(v), *lay.strides(do), *lay.rows(lse))
    _launch(_bwd_dkdv_kernel, BWD_CONFIGS, lay.n_k, lay.batch * lay.kv_heads, "BLOCK_N",
            q, k, v, do, lse, delta, dk, dv, cu_q, cu_k, *inputs, *lay.strides(dk), *lay.strides(dv),
            lay.n_q, lay.n_k, lay.kv_heads, scale * LOG2E, scale, **common)
    _launch(_bwd_dq_kernel, BWD_CONFIGS, lay.n_q, lay.batch * lay.heads, "BLOCK_M",
            q, k, v, do, lse, delta, dq, cu_q, cu_k, *inputs, *lay.strides(dq),
            lay.n_q, lay.n_k, lay.heads, scale * LOG2E, scale, **common)
    return dq, dk, dv


class FlashAttention(torch.autograd.Function):
    """softmax(q k^T * scale) v with FlashAttention-2's forward and backward kernels."""

    @staticmethod
    def forward(ctx, q, k, v, causal, scale, cu_q, cu_k, max_q, max_k):
        q, k, v = _last_contiguous(q), _last_contiguous(k), _last_contiguous(v)
        o, lse = _forward(q, k, v, causal, scale, cu_q, cu_k, max_q, max_k)
        ctx.save_for_backward(q, k, v, o, lse, cu_q, cu_k)
        ctx.args = (causal, scale, max_q, max_k)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, cu_q, cu_k = ctx.saved_tensors
        causal, scale, max_q, max_k = ctx.args
        dq, dk, dv = _backward(do, q, k, v, o, lse, causal, scale, cu_q, cu_k, max_q, max_k)
        return dq, dk, dv, None, None, None, None, None, None


def flash_attention(q, k, v, causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """q (B, H, Nq, D), k/v (B, Hkv, Nk, D) -> (B, H, Nq, D). Differentiable."""
    _check(q, k, v, None, None)
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    return FlashAttention.apply(q, k, v, causal, scale, None, None, q.shape[2], k.shape[2])


def flash_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q: int, max_seqlen_k: int,
                           causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """Padding-free: q (total_q, H, D), k/v (total_k, Hkv, D), sequence b = rows cu[b]:cu[b+1]."""
    _check(q, k, v, cu_seqlens_q, cu_seqlens_k)
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    cu_q = cu_seqlens_q.to(torch.int32).contiguous()
    cu_k = cu_seqlens_k.to(torch.int32).contiguous()
    return FlashAttention.apply(q, k, v, causal, scale, cu_q, cu_k, int(max_seqlen_q), int(max_seqlen_k))
