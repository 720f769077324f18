"""Compile every lab kernel for a CUDA architecture on a machine without a GPU.

Triton's wheel ships ptxas, so `triton.compile(..., target=GPUTarget("cuda", 90, 32))` runs the
whole pipeline (ttir -> ttgir -> llvm -> ptx -> cubin) here. This catches what the interpreter
cannot: type errors the compiler sees, and tiles that need more shared memory than the GPU has
(the autotuner skips those configs at run time; this says which). It says nothing about speed.

Kernels must be defined compiled, so this runs in its own process with TRITON_INTERPRET=0:
    python -m labcli.kernels.compile_check --arch 90 [--all-configs]
prints one JSON list (kernel, variant, ok, shared memory, error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}  # bytes of shared memory per block


def _signature(fn, pointers: dict, floats: tuple, constexprs: dict) -> dict:
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in pointers:
            sig[name] = pointers[name]
        else:
            sig[name] = "fp32" if name in floats else "i32"
    return sig


def _variants(all_configs: bool):
    """(kernel name, variant label, jit function, signature, constexprs, options) to compile."""
    from labcli.kernels.flash_attention import triton as fa
    from labcli.kernels.nf4 import triton as nf4

    def attn(kernel, dtype, head_dim, causal, varlen, group, cfg):
        ptr = "*" + {"fp16": "fp16", "bf16": "bf16", "fp32": "fp32"}[dtype]
        names = {"Q", "K", "V", "O", "DO", "DK", "DV", "DQ"}
        pointers = {n: ptr for n in names} | {"LSE": "*fp32", "DELTA": "*fp32", "CU_Q": "*i32", "CU_K": "*i32"}
        const = dict(GROUP=group, HEAD_DIM=head_dim, BLOCK_D=head_dim, CAUSAL=causal, VARLEN=varlen,
                     PRECISION="ieee" if dtype == "fp32" else None, **cfg.kwargs)
        label = (f"{dtype} d={head_dim} {'causal' if causal else 'full'}{' varlen' if varlen else ''}"
                 f"{f' gqa{group}' if group > 1 else ''} {cfg.kwargs['BLOCK_M']}x{cfg.kwargs['BLOCK_N']}"
                 f" w{cfg.num_warps} s{cfg.num_stages}")
        return (kernel.__name__, label, kernel, _signature(kernel, pointers, ("qk_scale", "sm_scale"), const), const,
                {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})

    fwd = fa.FWD_CONFIGS if all_configs else fa.FWD_CONFIGS[:1]
    bwd = fa.BWD_CONFIGS if all_configs else fa.BWD_CONFIGS[:1]
    for cfg in fwd:
        yield attn(fa._fwd_kernel, "fp16", 128, True, False, 1, cfg)
    yield attn(fa._fwd_kernel, "bf16", 64, False, True, 4, fa.FWD_CONFIGS[0])
    yield attn(fa._fwd_kernel, "fp32", 64, True, False, 1, fa.FWD_CONFIGS[3])
    for kernel in (fa._bwd_dkdv_kernel, fa._bwd_dq_kernel):
        for cfg in bwd:
            yield attn(kernel, "fp16", 128, True, False, 1, cfg)
        yield attn(kernel, "bf16", 64, False, True, 4, fa.BWD_CONFIGS[0])

    no_fma = {"enable_fp_fusion": False}
    for out, nested in (("fp16", True), ("bf16", True), ("fp32", False)):
        const = dict(BLOCKSIZE=64, BLOCKSIZE2=256, NESTED=nested, ROWS=32)
        pointers = {"W": "*u8", "ABSMAX": "*u8" if nested else "*fp32", "CODE2": "*fp32", "ABSMAX2": "*fp32",
                    "CODE": "*fp32", "OUT": f"*{out}"}
        yield ("_dequant_kernel", f"{out} nested={nested} blocksize 64", nf4._dequant_kernel,
               _signature(nf4._dequant_kernel, pointers, ("offset",), const), const, {"num_warps": 4, **no_fma})
    for x, row_scales in (("fp16", True), ("bf16", True), ("fp32", False)):
        const = dict(BLOCKSIZE=64, BLOCKSIZE2=256, NESTED=True, ROW_SCALES=row_scales, BLOCK_M=16, BLOCK_N=64,
                     BLOCK_K=64, PRECISION="ieee" if x == "fp32" else None)
        pointers = {"X": f"*{x}", "W": "*u8", "ABSMAX": "*u8", "CODE2": "*fp32", "ABSMAX2": "*fp32",
                    "CODE": "*fp32", "PART": "*fp32"}
        yield ("_matmul_kernel", f"{x} {'row' if row_scales else 'per-element'} scales 16x64x64",
               nf4._matmul_kernel, _signature(nf4._matmul_kernel, pointers, ("offset",), const), const,
               {"num_warps": 4, "num_stages": 3, **no_fma})


def compile_all(arch: int, all_configs: bool = False) -> list[dict]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, 32)
    rows = []
    for kernel, variant, fn, sig, const, options in _variants(all_configs):
        start = time.perf_counter()
        row = {"kernel": kernel, "variant": variant, "arch": f"sm_{arch}"}
        try:
            compiled = triton.compile(ASTSource(fn, sig, const), target=target, options=options)
            shared = compiled.metadata.shared
            fits = shared <= SHARED_LIMIT.get(arch, 101376)
            row.update(ok=True, shared_kb=round(shared / 1024, 1), fits=fits)
        except Exception as exc:  # a compile error is the result here
            row.update(ok=False, error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]}")
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10 (80 A100, 90 H100/H200)")
    parser.add_argument("--all-configs", action="store_true", help="every autotune config, not one per kernel")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET", "0") not in ("0", ""):
        sys.exit("run it as TRITON_INTERPRET=0 python -m labcli.kernels.compile_check (kernels defined compiled)")
    print(json.dumps(compile_all(args.arch, args.all_configs)))


def run_subprocess(arch: int, all_configs: bool = False, timeout: int = 900) -> list[dict]:
    """compile_all in a fresh process (the caller may already have kernels defined interpreted)."""
    import subprocess

    cmd = [sys.executable, "-m", "labcli.kernels.compile_check", "--arch", str(arch)]
    cmd += ["--all-configs"] if all_configs else []
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"kernel": "all", "variant": "-", "arch": f"sm_{arch}", "ok": False, "error": tail[:200]}]
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
