"""`lab serve onnx`: export a run's model to ONNX, check it against eager, time onnxruntime vs eager.

Writes RUN/onnx/ (the bundle every server here uses), parity.json, latency.json, latency.png,
summary.json and report.md.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path

from pydantic import Field

from labcli import runs
from labcli.config import RecipeConfig
from labcli.runs import Run
from labcli.serving.export import (
    SAMPLE_TEXTS,
    TOLERANCE,
    eager_generate,
    eager_logits,
    export_bundle,
    load_eager,
    read_json,
    sample_tensors,
)
from labcli.serving.source import resolve


class Config(RecipeConfig):
    run: str = Field("", description="Training run folder to export (holds model/ and summary.json)")
    model: str = Field("", description="Or a save_pretrained folder, or a tiny-* preset (tiny-mbart, tiny-t5, tiny-gpt2, tiny-llama)")
    max_new_tokens: int = Field(32, ge=1, le=1024, description="Greedy decoding length limit")
    repeats: int = Field(20, ge=1, le=10000, description="Timed calls per latency measurement (after 2 warm-up calls)")
    batch: int = Field(8, ge=1, le=256, description="Batch size of the batched logits measurement")


def timed(fn, repeats: int) -> float:
    """Median milliseconds of fn() over `repeats` calls after two warm-ups."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def link_tree(src: Path, dest: Path) -> None:
    """Copy a folder by hard links where the file system allows (ONNX weights can be large)."""
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
    shutil.copytree(src, dest, copy_function=link, dirs_exist_ok=True)


def run(cfg: Config, ctx: Run) -> None:
    import numpy as np

    from labcli.serving.greedy import OnnxGenerator

    source = resolve(cfg.run, cfg.model)
    bundle = export_bundle(source, cfg.max_new_tokens)
    link_tree(bundle, ctx.path("onnx"))
    parity = read_json(ctx.path("onnx") / "parity.json")
    model, tokenizer = load_eager(source)
    generator = OnnxGenerator(bundle, threads=int(os.environ.get("LAB_THREADS", "0")) or None)

    ids, mask, dec = sample_tensors(model, tokenizer)
    big = [np.repeat(x, -(-cfg.batch // x.shape[0]), axis=0)[: cfg.batch] if x is not None else None for x in (ids, mask, dec)]
    cases = {
        "logits, batch 1": ((ids[:1], mask[:1], None if dec is None else dec[:1])),
        f"logits, batch {cfg.batch}": tuple(big),
    }
    rows = []
    from rich.progress import track

    for name, (i, m, d) in track(list(cases.items()), description="timing eager vs onnxruntime"):
        rows.append({"case": name, "eager_ms": timed(lambda: eager_logits(model, i, m, d), cfg.repeats),
                     "onnxruntime_ms": timed(lambda: generator.logits(i, m, d), cfg.repeats)})
    text = SAMPLE_TEXTS[0]
    n = max(1, cfg.repeats // 4)
    rows.append({"case": "greedy text, 1 sentence",
                 "eager_ms": timed(lambda: eager_generate(model, tokenizer, [text], generator.meta["max_new_tokens"]), n),
                 "onnxruntime_ms": timed(lambda: generator.generate([text]), n)})
    for row in rows:
        row["eager_ms"], row["onnxruntime_ms"] = round(row["eager_ms"], 3), round(row["onnxruntime_ms"], 3)
        row["speedup"] = round(row["eager_ms"] / row["onnxruntime_ms"], 2)
    runs.write_json(ctx.path("latency.json"), rows)
    for row in rows:
        ctx.log(**row)
    plot(rows, ctx.path("latency.png"))
    summary = {"task": source.task, "model_dir": str(source.model_dir), "onnx": str(ctx.path("onnx")),
               "max_abs_diff": parity["max_abs_diff"], "tolerance": TOLERANCE, "parity_ok": parity["max_abs_diff"] <= TOLERANCE,
               "text_match": parity["text_match"], "export_s": parity["export_s"], "latency": rows,
               "threads": int(os.environ.get("LAB_THREADS", "0")) or os.cpu_count()}
    ctx.write_summary(summary)
    ctx.write_report(report(summary, parity))
    print(f"ONNX: {ctx.path('onnx')}  max |diff| {parity['max_abs_diff']:.1e} (<= {TOLERANCE})  text match: {parity['text_match']}")
    for row in rows:
        print(f"  {row['case']:<26} eager {row['eager_ms']:8.2f} ms   onnxruntime {row['onnxruntime_ms']:8.2f} ms   x{row['speedup']}")
    print(f"report: {ctx.path('report.md')}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(x - 0.2, [r["eager_ms"] for r in rows], 0.4, label="eager (torch)")
    ax.bar(x + 0.2, [r["onnxruntime_ms"] for r in rows], 0.4, label="onnxruntime")
    ax.set_xticks(x, [r["case"] for r in rows])
    ax.set_ylabel("median latency (ms)")
    ax.set_title("eager vs onnxruntime (CPU)")
    ax.legend()
    fig.tight_layout()
    from labcli.eval.plots import save

    save(fig, path)


def report(summary: dict, parity: dict) -> str:
    lines = [f"# ONNX export of `{summary['model_dir']}`", "",
             f"- task: {summary['task']}; export {summary['export_s']} s (torch.onnx.export, dynamo=True, dynamic batch/sequence axes)",
             f"- parity: max |logits diff| = {summary['max_abs_diff']:.2e} (tolerance {TOLERANCE}); greedy text identical: {summary['text_match']}",
             f"- threads: {summary['threads']}", "",
             "| case | eager ms | onnxruntime ms | speedup |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['case']} | {r['eager_ms']} | {r['onnxruntime_ms']} | x{r['speedup']} |" for r in summary["latency"]]
    lines += ["", "![latency](latency.png)", "", "| input | onnxruntime | eager |", "| --- | --- | --- |"]
    lines += [f"| {s['input']} | {s['onnx']} | {s['eager']} |" for s in parity["samples"]]
    return "\n".join(lines) + "\n"
