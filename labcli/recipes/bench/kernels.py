"""`lab bench kernels`: lab's Triton kernels against torch SDPA and bitsandbytes, plus FA2's memory claim.

Tables: attention forward/backward (lab-flash vs SDPA's flash and math backends), NF4 dequantize
(vs bitsandbytes dequantize_4bit), NF4 decode matmul (vs bitsandbytes matmul_4bit and
dequantize-then-matmul), the peak memory of naive vs tiled attention from N=512 to 8192, and on a
CPU a compile check of every kernel for a CUDA architecture. Where the kernels run under Triton's
interpreter (no GPU) the tables hold correctness only, and say so.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.runs import Run

RESUMABLE = True  # each finished stage is kept (ctx.cell); --resume auto runs the rest
DType = Literal["fp32", "fp16", "bf16"]
GPU_NF4_SHAPES = [[4096, 14336], [14336, 4096], [4096, 4096]]  # Llama-3-8B MLP up/down and attention


class Config(RecipeConfig):
    seq_lens: list[int] | None = Field(None, description="Attention sequence lengths (None: 128 interpreted; "
                                                         "1024, 2048, 4096, 8192, 16384 on CUDA)")
    head_dims: list[int] = Field([64, 128], description="Attention head dims (at most 256)")
    dtypes: list[DType] | None = Field(None, description="Attention and NF4 dtypes (None: fp32, fp16 interpreted; "
                                                         "fp16, bf16 on CUDA). bf16 runs compiled only")
    causal: list[bool] = Field([False, True], description="Causal and/or full attention")
    batch: int | None = Field(None, ge=1, description="Attention batch (None: 1 interpreted, 4 on CUDA)")
    heads: int | None = Field(None, ge=1, description="Attention heads (None: 2 interpreted, 16 on CUDA)")
    attention_impls: list[Literal["lab-flash", "sdpa-flash", "sdpa-math"]] = Field(
        ["lab-flash", "sdpa-flash", "sdpa-math"], description="Implementations in the attention table")
    math_limit_gb: float = Field(8.0, gt=0, description="Skip sdpa-math where its score matrix exceeds this")
    nf4_shapes: list[list[int]] | None = Field(None, description="NF4 weight shapes [N, K] (None: [[256, 512]] "
                                                                 "interpreted; 4096x14336, 14336x4096, 4096x4096 on CUDA)")
    nf4_batches: list[int] | None = Field(None, description="Rows of x for the decode matmul, each <= 16 "
                                                            "(None: 1, 16 interpreted; 1, 2, 4, 8, 16 on CUDA)")
    memory_seq_lens: list[int] = Field([512, 1024, 2048, 4096, 8192], description="N of the memory table")
    memory_head_dim: int = Field(64, ge=8, description="Head dim of the memory table (batch 1, 1 head; fp16 on CUDA, fp32 on the CPU)")
    memory_block: int = Field(128, ge=16, description="Tile size of the tiled reference in the memory table")
    compile_arch: int = Field(90, ge=0, description="Without a GPU: compile every kernel for this sm_XX "
                                                    "(80 A100, 90 H100/H200; 0 skips)")

    @field_validator("head_dims")
    @classmethod
    def _head_dims(cls, dims):
        if not dims or any(not 16 <= d <= 256 for d in dims):
            raise ValueError("each head dim must be 16..256, e.g. [64,128]")
        return dims

    @field_validator("nf4_shapes")
    @classmethod
    def _nf4_shapes(cls, shapes):
        if shapes is not None and any(len(s) != 2 or min(s) < 2 for s in shapes):
            raise ValueError("each shape is [N, K], e.g. [[4096,14336]]")
        return shapes

    @field_validator("nf4_batches")
    @classmethod
    def _nf4_batches(cls, batches):
        if batches is not None and any(not 1 <= m <= 16 for m in batches):
            raise ValueError("the decode kernel takes 1..16 rows, e.g. [1,4,16]")
        return batches


def resolve(cfg: Config, device: torch.device, interpreted: bool) -> dict:
    """The sizes this run uses: the config's, or the defaults for where the kernels run."""
    gpu = not interpreted
    plan = {
        "seq_lens": cfg.seq_lens or ([1024, 2048, 4096, 8192, 16384] if gpu else [128]),
        "dtypes": cfg.dtypes or (["fp16", "bf16"] if gpu else ["fp32", "fp16"]),
        "batch": cfg.batch or (4 if gpu else 1),
        "heads": cfg.heads or (16 if gpu else 2),
        "nf4_shapes": [tuple(s) for s in (cfg.nf4_shapes or (GPU_NF4_SHAPES if gpu else [[256, 512]]))],
        "nf4_batches": cfg.nf4_batches or ([1, 2, 4, 8, 16] if gpu else [1, 16]),
    }
    skipped = []
    if interpreted and "bf16" in plan["dtypes"]:
        plan["dtypes"] = [d for d in plan["dtypes"] if d != "bf16"]
        skipped.append("bf16: the interpreter multiplies bf16's raw uint16 bits and truncates fp32->bf16, "
                       "so bf16 runs only compiled (tests marked gpu)")
    plan["skipped"] = skipped
    return plan


def pick_device(cfg: Config) -> tuple[torch.device, bool]:
    from labcli.kernels import runtime

    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but torch sees no CUDA device", "drop --device, or run on a GPU machine")
    if not cuda and not runtime.interpreting():
        raise UserError("CPU tensors need the Triton interpreter, and this process compiles kernels for CUDA",
                        "run `TRITON_INTERPRET=1 lab bench kernels --device cpu`")
    return torch.device("cuda" if cuda else "cpu"), runtime.interpreting()


def plan(cfg: Config) -> str:
    """What `lab check bench kernels` says the run will do."""
    from labcli.kernels import runtime

    where = ("compiled on CUDA, timed" if torch.cuda.is_available() and cfg.device != "cpu"
             else "under the Triton interpreter: correctness only, no times")
    return (f"attention, NF4 dequantize and NF4 matmul tables {where}; peak memory of naive vs tiled attention "
            f"at N = {', '.join(map(str, cfg.memory_seq_lens))}; Triton {runtime.triton_version()}")


def check(cfg: Config) -> list[str]:
    from labcli.kernels import runtime

    if runtime.triton_version() is None:
        return ["triton is not installed (hint: pip install 'triton>=3.8'; Linux only)"]
    return []


def run(cfg: Config, ctx: Run) -> None:
    """Stage by stage; each finished stage is kept (ctx.cell), so --resume auto runs only the rest."""
    from labcli.kernels import bench, compile_check, runtime

    device, interpreted = pick_device(cfg)
    plan = resolve(cfg, device, interpreted)
    stage = _stages(ctx)
    with stage("attention") as log:
        attention = ctx.cell("attention", lambda: bench.attention_rows(
            plan["batch"], plan["heads"], plan["seq_lens"], cfg.head_dims, plan["dtypes"], cfg.causal, device,
            cfg.attention_impls, cfg.math_limit_gb))
        log(cells=len(attention))
    nf4_dtypes = [d for d in plan["dtypes"] if d in ("fp16", "bf16", "fp32")]
    with stage("nf4") as log:
        dequant = ctx.cell("nf4-dequantize", lambda: bench.nf4_dequant_rows(plan["nf4_shapes"], nf4_dtypes, device))
        matmul = ctx.cell("nf4-matmul", lambda: bench.nf4_matmul_rows(plan["nf4_shapes"], nf4_dtypes, plan["nf4_batches"], device))
        log(cells=len(dequant) + len(matmul))
    with stage("memory") as log:
        memory = ctx.cell("memory", lambda: bench.memory_rows(cfg.memory_seq_lens, cfg.memory_head_dim, cfg.memory_block, device))
        log(cells=len(memory))
    compiled = []
    if interpreted and cfg.compile_arch:
        with stage(f"compile sm_{cfg.compile_arch}") as log:
            compiled = ctx.cell("compile", lambda: compile_check.run_subprocess(cfg.compile_arch))
            log(cells=len(compiled))
    summary = {"hardware": _hardware(device), "kernels": runtime.status(), "plan": plan,
               "attention": attention, "nf4_dequantize": dequant, "nf4_matmul": matmul, "memory": memory,
               "growth_exponent": {impl: bench.growth_exponent(memory, impl)
                                   for impl in dict.fromkeys(r["impl"] for r in memory)},
               "compile_check": compiled}
    report(ctx, summary)
    print_tables(summary)


def _hardware(device: torch.device) -> str:
    from labcli.eval.measure import hardware_line

    return hardware_line(device)


def _stages(ctx: Run):
    """A context manager per stage that logs its wall time to metrics.jsonl (progress, not a result)."""
    import contextlib
    import time

    @contextlib.contextmanager
    def stage(name):
        start = time.perf_counter()
        extra = {}
        print(f"bench kernels: {name} ...", flush=True)
        yield lambda **kw: extra.update(kw)
        ctx.log(stage=name, seconds=round(time.perf_counter() - start, 1), **extra)

    return stage


# ---------------------------------------------------------------------------------------------
# Report: the same tables in report.md and in the terminal, a PNG of the memory growth (and of
# TFLOP/s on CUDA), the GPU goals checked where they were measured.

def _ms(row) -> str:
    if row.get("status") != "ok":
        return "-"
    if not row.get("timed"):
        return "not timed"
    return f"{row['ms']:.3f} ({row['ms_p20']:.3f}-{row['ms_p80']:.3f})"


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _speedup(row, base) -> str:
    if not (row.get("timed") and base and base.get("ms")) or row is base:
        return "-"
    return f"{100 * (base['ms'] / row['ms'] - 1):+.1f}%"


def _find(rows, **match):
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table."""
    out = []
    att = summary["attention"]
    rows = []
    for r in att:
        base = _find(att, impl="sdpa-flash", n=r["n"], dim=r["dim"], dtype=r["dtype"], causal=r["causal"],
                     mode=r["mode"])
        rows.append([str(r["n"]), str(r["dim"]), r["dtype"], "causal" if r["causal"] else "full", r["mode"], r["impl"],
                     _ms(r), _num(r.get("tflops"), ".1f"), _speedup(r, base), _num(r.get("max_error"), ".1e"),
                     r.get("note", "")])
    b, h = summary["plan"]["batch"], summary["plan"]["heads"]
    out.append((f"Attention, batch {b} x {h} heads (TFLOP/s as Triton's tutorial counts: 4·B·H·N²·D, /2 causal, "
                f"x2.5 backward; Δ: speed vs sdpa-flash, + is faster; error vs fp32 math)",
                ["N", "D", "dtype", "mask", "pass", "impl", "ms (p20-p80)", "TFLOP/s", "Δ", "max error", "note"], rows))
    deq = summary["nf4_dequantize"]
    rows = []
    for r in deq:
        base = _find(deq, impl="bnb dequantize_4bit", n=r["n"], k=r["k"], dtype=r["dtype"])
        exact = "-" if "bit_exact" not in r else ("bit-exact" if r["bit_exact"] else f"{r['max_error']:.1e}")
        rows.append([f"{r['n']}x{r['k']}", r["dtype"], r["impl"], _ms(r), _num(r.get("gbps"), ".0f"),
                     _speedup(r, base), exact])
    out.append(("NF4 dequantize, double quantization, blocksize 64 (GB/s: packed codes + scales read, output "
                "written; Δ vs bitsandbytes; error vs bitsandbytes)",
                ["W", "dtype", "impl", "ms (p20-p80)", "GB/s", "Δ", "vs bnb"], rows))
    mm = summary["nf4_matmul"]
    rows = []
    for r in mm:
        base = _find(mm, impl="bnb matmul_4bit", m=r["m"], n=r["n"], k=r["k"], dtype=r["dtype"])
        rows.append([str(r["m"]), f"{r['n']}x{r['k']}", r["dtype"], r["impl"], _ms(r),
                     _num(r.get("weight_gbps"), ".0f"), _speedup(r, base), _num(r.get("max_rel_error"), ".1e")])
    out.append(("NF4 decode matmul y = x W^T (weight GB/s: NF4 bytes streamed; Δ vs bnb matmul_4bit; "
                "relative error vs bnb matmul_4bit)",
                ["rows", "W", "dtype", "impl", "ms (p20-p80)", "weight GB/s", "Δ", "rel. error"], rows))
    mem, growth = summary["memory"], summary["growth_exponent"]
    rows = [[str(r["n"]), r["impl"], f"{r['peak_bytes'] / 2**20:.2f}", _num(r["marginal_bytes_per_token"], ".0f"),
             f"{r['bytes_per_token2']:.2f}", _num(growth.get(r["impl"]), ".2f") if r["n"] == mem[-1]["n"] else ""]
            for r in mem]
    out.append((f"Peak memory of one attention forward (batch 1, 1 head, {mem[0].get('dtype', 'float32')}; {summary['memory_how']}). "
                "Linear growth: bytes added per token since the previous N stay constant; quadratic: "
                "bytes / N² stay constant", ["N", "impl", "peak MB", "Δbytes / ΔN", "bytes / N²",
                                             "growth exponent (last two N)"], rows))
    if summary["compile_check"]:
        rows = [[c["arch"], c["kernel"], c["variant"], "ok" if c["ok"] else "FAILED", _num(c.get("shared_kb"), ".1f"),
                 ("yes" if c.get("fits") else "NO") if c["ok"] else "-", c.get("error", "")]
                for c in summary["compile_check"]]
        out.append(("Compiled for a GPU without one (Triton's ptxas; shared memory per block vs the arch's limit; "
                    "no speed implied)", ["arch", "kernel", "variant", "compiled", "shared KB", "fits", "error"], rows))
    return out


def goals(summary: dict) -> list[str]:
    """The issue's GPU goals, checked where measured; otherwise said to be unmeasured."""
    if not summary["kernels"]["cuda"] or summary["kernels"]["interpreter"]:
        return ["GPU goals (attention fwd >= 0.9x SDPA flash at N >= 4096 fp16/bf16; NF4 dequantize >= 1.15x "
                "bitsandbytes on 4096x14336; fused NF4 matmul faster than dequantize-then-matmul at 1-16 rows): "
                "not measured here, the kernels ran under the interpreter (no GPU)."]
    lines = []
    att = summary["attention"]
    ratios = [(r, _find(att, impl="sdpa-flash", n=r["n"], dim=r["dim"], dtype=r["dtype"], causal=r["causal"],
                        mode="fwd")) for r in att
              if r["impl"] == "lab-flash" and r["mode"] == "fwd" and r["n"] >= 4096 and r["dtype"] in ("fp16", "bf16")
              and r.get("tflops")]
    ratios = [(r, b["tflops"] and r["tflops"] / b["tflops"]) for r, b in ratios if b and b.get("tflops")]
    if ratios:
        worst = min(ratios, key=lambda x: x[1])
        lines.append(f"attention fwd vs SDPA flash at N >= 4096: worst {worst[1]:.2f}x (N={worst[0]['n']}, "
                     f"D={worst[0]['dim']}, {worst[0]['dtype']}) -> goal 0.9x {'met' if worst[1] >= 0.9 else 'NOT met'}")
    deq = summary["nf4_dequantize"]
    for r in deq:
        base = _find(deq, impl="bnb dequantize_4bit", n=r["n"], k=r["k"], dtype=r["dtype"])
        if r["impl"] == "lab-nf4" and (r["n"], r["k"]) == (4096, 14336) and r.get("ms") and base:
            x = base["ms"] / r["ms"]
            lines.append(f"NF4 dequantize 4096x14336 {r['dtype']}: {x:.2f}x bitsandbytes -> goal 1.15x "
                         f"{'met' if x >= 1.15 else 'NOT met'}")
    mm = summary["nf4_matmul"]
    for r in mm:
        if r["impl"] != "lab-nf4 fused" or not r.get("ms"):
            continue
        other = _find(mm, impl="lab-nf4 dequantize + matmul", m=r["m"], n=r["n"], k=r["k"], dtype=r["dtype"])
        if other and other.get("ms"):
            x = other["ms"] / r["ms"]
            lines.append(f"fused NF4 matmul {r['m']}x{r['k']} @ {r['n']}x{r['k']} {r['dtype']}: {x:.2f}x "
                         f"dequantize-then-matmul -> {'beats it' if x > 1 else 'does NOT beat it'}")
    return lines


def _markdown(title, header, rows) -> str:
    from labcli.eval.tables import markdown_table

    return f"### {title}\n\n" + markdown_table(rows, header)


def report(ctx: Run, summary: dict) -> None:
    summary["memory_how"] = MEMORY_HOW[summary["memory"][0]["device"]] if summary["memory"] else ""
    summary["goals"] = goals(summary)
    ctx.write_summary(summary)
    images = plot(ctx, summary)
    status = summary["kernels"]
    mode = ("**The Triton kernels ran under the interpreter (no GPU): the tables hold correctness, not speed; "
            "no time is reported for them.**" if status["interpreter"] else "Kernels compiled for CUDA.")
    skipped = "".join(f"\n- skipped {s}" for s in summary["plan"]["skipped"])
    body = "\n\n".join(_markdown(*t) for t in tables(summary))
    ctx.write_report(
        f"# bench kernels\n\nHardware: {summary['hardware']}. Triton {status['triton']}, {status['mode']}. "
        f"{mode}{skipped}\n\n{body}\n\n## GPU goals\n\n" + "\n".join(f"- {g}" for g in summary["goals"])
        + "\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in images) + "\n")


MEMORY_HOW = {
    "cpu": "peak of the running sum of CPU allocator allocations minus frees recorded by "
           "torch.profiler(profile_memory=True) during the call; inputs excluded, output included",
    "cuda": "torch.cuda.max_memory_allocated during the call minus what was allocated before; "
            "inputs excluded, output included",
}


def print_tables(summary: dict) -> None:
    """The tables, then the headline: exactness of lab's kernels, the memory growth, the goals."""
    from labcli.eval.tables import print_table

    status = summary["kernels"]
    print(f"bench kernels: {summary['hardware']}; Triton {status['triton']}, {status['mode']}")
    for title, header, rows in tables(summary):
        print_table(rows, header, title)
    ours = [r for r in summary["attention"] if r["impl"] == "lab-flash" and r["status"] == "ok"]
    for dtype in dict.fromkeys(r["dtype"] for r in ours):
        errs = [r["max_error"] for r in ours if r["dtype"] == dtype]
        print(f"lab-flash {dtype}: max error fwd+bwd {max(errs):.1e} vs fp32 math ({len(errs)} cells)")
    deq = [r for r in summary["nf4_dequantize"] if r["impl"] == "lab-nf4"]
    fused = [r for r in summary["nf4_matmul"] if r["impl"] == "lab-nf4 fused"]
    errs = ", ".join(f"{d} {max(r['max_rel_error'] for r in fused if r['dtype'] == d):.1e}"
                     for d in dict.fromkeys(r["dtype"] for r in fused))
    print(f"lab-nf4: dequantize bit-exact with bitsandbytes in {sum(r['bit_exact'] for r in deq)}/{len(deq)} cells; "
          f"fused matmul max relative error vs bnb matmul_4bit: {errs or '-'}")
    growth = summary["growth_exponent"]
    print("attention peak memory, growth exponent over the two largest N: "
          + ", ".join(f"{k}: N^{_num(v, '.2f')}" for k, v in growth.items()))
    for line in summary["goals"]:
        print(line)


def plot(ctx: Run, summary: dict) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labcli.eval.plots import save

    out = []
    mem = summary["memory"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for impl in dict.fromkeys(r["impl"] for r in mem):
        mine = [r for r in mem if r["impl"] == impl]
        last = mine[-1]["marginal_bytes_per_token"]
        label = f"{impl}: last step N^{_num(summary['growth_exponent'].get(impl), '.2f')}, +{_num(last, '.0f')} B/token"
        ax.plot([r["n"] for r in mine], [r["peak_bytes"] / 2**20 for r in mine], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("peak MB during one forward")
    ax.set_title(f"peak memory of one attention forward ({mem[0].get('dtype', 'float32')}, 1 head)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    out.append(save(fig, ctx.path("memory.png")))
    timed = [r for r in summary["attention"] if r.get("tflops")]
    if timed:
        keys = sorted({(r["mode"], r["causal"], r["dim"]) for r in timed})
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
        for ax, (mode, causal, dim) in zip(axes[0], keys):
            for impl, dtype in sorted({(r["impl"], r["dtype"]) for r in timed}):
                pts = sorted((r["n"], r["tflops"]) for r in timed if (r["mode"], r["causal"], r["dim"], r["impl"],
                                                                      r["dtype"]) == (mode, causal, dim, impl, dtype))
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=f"{impl} {dtype}")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{mode} D={dim} {'causal' if causal else 'full'}", fontsize=9)
            ax.set_xlabel("N")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        axes[0][0].set_ylabel("TFLOP/s")
        out.append(save(fig, ctx.path("attention_tflops.png")))
    return out
