"""The measurements behind `lab bench kernels`: one function per table, each returning row dicts.

Speed is measured only where the kernels are compiled (CUDA): `triton.testing.do_bench` medians
with the 20th-80th percentile spread, after warm-up (and autotuning). Under the interpreter a row
carries the maximum error and `timed: False`, never a time. Errors are always against float32
math on the same (rounded) inputs, or against bitsandbytes for NF4.
"""

from __future__ import annotations

import math

import torch

from labcli.kernels import runtime

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def attention_flops(batch: int, heads: int, n: int, dim: int, causal: bool, mode: str) -> float:
    """Triton tutorial 06's count: 2 matmuls of 2*N*N*D per head, half when causal, 2.5x for backward."""
    flops = 4.0 * batch * heads * n * n * dim * (0.5 if causal else 1.0)
    return flops * (2.5 if mode == "bwd" else 1.0)


def time_ms(fn) -> tuple[float, float, float]:
    """(median, p20, p80) milliseconds of fn() on CUDA."""
    import triton.testing

    p20, p50, p80 = triton.testing.do_bench(fn, warmup=25, rep=100, quantiles=[0.2, 0.5, 0.8])
    return p50, p20, p80


def peak_bytes(fn, device: torch.device) -> int:
    """Peak bytes of tensors alive during fn() beyond those alive before it.

    CUDA: the caching allocator's max_memory_allocated. CPU: torch.profiler(profile_memory=True)
    records every allocation and free of the CPU allocator; the peak of their running sum.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    from labcli.eval.profiler import quiet_kineto

    with quiet_kineto(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def _sdpa(backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = {"flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}[backend]

    def fn(q, k, v, causal):
        with sdpa_kernel(chosen):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return fn


def _lab_flash(q, k, v, causal):
    from labcli.kernels.flash_attention import flash_attention

    return flash_attention(q, k, v, causal=causal)


ATTENTION_IMPLS = {"lab-flash": _lab_flash, "sdpa-flash": _sdpa("flash"), "sdpa-math": _sdpa("math")}


def _reference(q, k, v, do, causal, heads: int):
    """fp32 math output and grads on batch 0, the first `heads` heads (bounds memory at large N)."""
    from labcli.kernels.flash_attention.reference import attention_math

    qs, ks, vs = (t[:1, :heads].detach().float().requires_grad_() for t in (q, k, v))
    out = attention_math(qs, ks, vs, causal)
    out.backward(do[:1, :heads].float())
    return out, qs.grad, ks.grad, vs.grad


def attention_rows(batch, heads, seq_lens, head_dims, dtypes, causals, device, impls, math_limit_gb) -> list[dict]:
    """Forward and backward of each implementation per (N, D, dtype, causal)."""
    timed = device.type == "cuda" and not runtime.interpreting()
    rows = []
    for n in seq_lens:
        for dim in head_dims:
            for dtype_name in dtypes:
                dtype = DTYPES[dtype_name]
                for causal in causals:
                    g = torch.Generator().manual_seed(n + dim)
                    q, k, v, do = (torch.randn(batch, heads, n, dim, generator=g).to(device, dtype) for _ in range(4))
                    ref = _reference(q, k, v, do, causal, min(heads, 2))
                    for impl in impls:
                        rows += _attention_cells(impl, q, k, v, do, causal, ref, timed, math_limit_gb,
                                                 dict(batch=batch, heads=heads, n=n, dim=dim, dtype=dtype_name,
                                                      causal=causal))
    return rows


def _attention_cells(impl, q, k, v, do, causal, ref, timed, math_limit_gb, shape) -> list[dict]:
    fn = ATTENTION_IMPLS[impl]
    scores_gb = shape["batch"] * shape["heads"] * shape["n"] ** 2 * q.element_size() / 1e9
    base = {**shape, "impl": impl}
    if impl == "sdpa-math" and scores_gb > math_limit_gb:
        note = f"skipped: the math backend would hold {scores_gb:.1f} GB of scores (math_limit_gb={math_limit_gb})"
        return [{**base, "mode": m, "status": "skipped", "note": note} for m in ("fwd", "bwd")]
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    try:
        out = fn(*leaves, causal)
        out.backward(do)
    except RuntimeError as exc:  # e.g. SDPA's flash backend refusing a dtype or head dim on this device
        note = f"cannot run: {str(exc).strip().splitlines()[0][:140]}"
        return [{**base, "mode": m, "status": "cannot run", "note": note} for m in ("fwd", "bwd")]
    h = ref[0].shape[1]
    fwd_err = (out[:1, :h].float() - ref[0]).abs().max().item()
    bwd_err = max((leaf.grad[:1, :h].float() - r).abs().max().item() for leaf, r in zip(leaves, ref[1:]))
    rows = []
    for mode, err in (("fwd", fwd_err), ("bwd", bwd_err)):
        row = {**base, "mode": mode, "status": "ok", "max_error": err, "timed": timed}
        if timed:
            if mode == "fwd":
                call = lambda: fn(*leaves, causal)  # noqa: E731
            else:
                out = fn(*leaves, causal)
                call = lambda: out.backward(do, retain_graph=True)  # noqa: E731
            ms, p20, p80 = time_ms(call)
            flops = attention_flops(shape["batch"], shape["heads"], shape["n"], shape["dim"], causal, mode)
            row.update(ms=ms, ms_p20=p20, ms_p80=p80, tflops=flops / ms / 1e9)
        rows.append(row)
    return rows


def _quantized(n: int, k: int, dtype: torch.dtype, device, seed: int):
    import bitsandbytes as bnb

    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.02
    p = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4", compress_statistics=True).to(device)
    p.quant_state.dtype = dtype
    return p


def nf4_bytes(n: int, k: int, out_elsize: int, blocksize: int = 64) -> int:
    """Bytes a dequantization moves: packed codes, uint8 scales, their fp32 scales, the output."""
    blocks = math.ceil(n * k / blocksize)
    return n * k // 2 + blocks + math.ceil(blocks / 256) * 4 + n * k * out_elsize


def nf4_dequant_rows(shapes, dtypes, device) -> list[dict]:
    import bitsandbytes.functional as bnbf

    from labcli.kernels.nf4 import dequantize_nf4

    timed = device.type == "cuda" and not runtime.interpreting()
    rows = []
    for n, k in shapes:
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            p = _quantized(n, k, dtype, device, seed=n + k)
            theirs = bnbf.dequantize_4bit(p.data, p.quant_state)
            ours = dequantize_nf4(p)
            calls = {"lab-nf4": lambda: dequantize_nf4(p),
                     "bnb dequantize_4bit": lambda: bnbf.dequantize_4bit(p.data, p.quant_state)}
            for impl, call in calls.items():
                row = {"n": n, "k": k, "dtype": dtype_name, "impl": impl, "status": "ok", "timed": timed}
                if impl == "lab-nf4":
                    row.update(max_error=(ours.float() - theirs.float()).abs().max().item(),
                               bit_exact=bool(torch.equal(ours, theirs)))
                if timed:
                    ms, p20, p80 = time_ms(call)
                    row.update(ms=ms, ms_p20=p20, ms_p80=p80, gbps=nf4_bytes(n, k, ours.element_size()) / ms / 1e6)
                rows.append(row)
    return rows


def nf4_matmul_rows(shapes, dtypes, batches, device) -> list[dict]:
    import bitsandbytes as bnb

    from labcli.kernels.nf4 import dequantize_nf4, nf4_matmul

    timed = device.type == "cuda" and not runtime.interpreting()
    rows = []
    for n, k in shapes:
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            p = _quantized(n, k, dtype, device, seed=n * k)
            for m in batches:
                x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(device, dtype)
                theirs = bnb.matmul_4bit(x, p.t(), quant_state=p.quant_state)
                calls = {
                    "lab-nf4 fused": lambda: nf4_matmul(x, p),
                    "lab-nf4 dequantize + matmul": lambda: x @ dequantize_nf4(p, dtype=dtype).t(),
                    "bnb matmul_4bit": lambda: bnb.matmul_4bit(x, p.t(), quant_state=p.quant_state),
                }
                for impl, call in calls.items():
                    row = {"m": m, "n": n, "k": k, "dtype": dtype_name, "impl": impl, "status": "ok", "timed": timed}
                    if impl != "bnb matmul_4bit":
                        got = call()
                        row["max_rel_error"] = ((got.float() - theirs.float()).abs().max()
                                                / theirs.float().abs().max()).item()
                    if timed:
                        ms, p20, p80 = time_ms(call)
                        row.update(ms=ms, ms_p20=p20, ms_p80=p80, tflops=2.0 * m * n * k / ms / 1e9,
                                   weight_gbps=nf4_bytes(n, k, 0) / ms / 1e6)
                    rows.append(row)
    return rows


def memory_rows(seq_lens, dim: int, block: int, device) -> list[dict]:
    """Peak memory of naive attention vs the tiled online-softmax reference (and, on CUDA, the kernels)."""
    from labcli.kernels.flash_attention.reference import attention_math, attention_tiled

    impls = {"naive (scores materialised)": lambda q, k, v: attention_math(q, k, v),
             f"tiled online softmax ({block}x{block} tiles)": lambda q, k, v: attention_tiled(q, k, v, False, None,
                                                                                             block, block)}
    if device.type == "cuda" and not runtime.interpreting():
        impls["lab-flash (Triton)"] = _lab_flash_no_grad
        impls["sdpa-flash"] = lambda q, k, v: ATTENTION_IMPLS["sdpa-flash"](q, k, v, False)
    rows, last = [], {}
    for n in sorted(seq_lens):
        g = torch.Generator().manual_seed(n)
        # fp16 on CUDA (SDPA's flash backend has no fp32 kernel), fp32 on the CPU
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        q, k, v = (torch.randn(1, 1, n, dim, generator=g).to(device, dtype) for _ in range(3))
        for impl, fn in impls.items():
            with torch.no_grad():
                peak = peak_bytes(lambda: fn(q, k, v), device)
            before = last.get(impl)
            # bytes added per extra token since the previous N: constant when linear, doubling when quadratic
            marginal = (peak - before[1]) / (n - before[0]) if before else None
            rows.append({"n": n, "impl": impl, "device": device.type, "dtype": str(dtype).removeprefix("torch."), "peak_bytes": peak,
                         "bytes_per_token": peak / n, "bytes_per_token2": peak / n ** 2,
                         "marginal_bytes_per_token": marginal})
            last[impl] = (n, peak)
    return rows


def _lab_flash_no_grad(q, k, v):
    return _lab_flash(q, k, v, False)


def growth_exponent(rows: list[dict], impl: str) -> float | None:
    """Slope of log(peak) against log(N) over the two largest N: ~1 linear, ~2 quadratic."""
    pts = sorted((r["n"], r["peak_bytes"]) for r in rows if r["impl"] == impl and r["peak_bytes"] > 0)
    if len(pts) < 2:
        return None
    (n0, b0), (n1, b1) = pts[-2], pts[-1]
    return math.log(b1 / b0) / math.log(n1 / n0)
