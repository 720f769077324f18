"""`lab serve onnx`: export a run's model to ONNX, check it against eager, time onnxruntime vs eager.

The export fails (no bundle, exit 2) unless the ONNX graphs give the eager logits within 1e-4 and
the same greedy text on the sample sentences. Both sides are timed on the same computation: the
exported graphs run the model without a KV cache and project only the last position onto the
vocabulary, so eager runs under `last_position_head` with `use_cache=False` too. One more row shows
transformers' default `generate` (KV cache on) for reference; it is a different computation.
Writes RUN/onnx/ (the bundle every server here uses), latency.json, latency.png, summary.json, report.md.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from pydantic import Field

from labcli import runs
from labcli.config import RecipeConfig
from labcli.eval.measure import hardware_line
from labcli.eval.tables import markdown_table, print_table
from labcli.runs import Run
from labcli.serving.decoding import for_source
from labcli.serving.export import (
    SAMPLE_TEXTS,
    TOLERANCE,
    eager_generate,
    eager_logits,
    export_bundle,
    last_position_head,
    link_tree,
    load_eager,
    read_json,
    sample_tensors,
)
from labcli.serving.source import plan as source_plan
from labcli.serving.source import resolve

COLUMNS = ["case", "computes (both sides)", "eager_ms", "onnxruntime_ms", "speedup"]


class Config(RecipeConfig):
    run: str = Field("", description="Training run folder to export (holds model/ and summary.json)")
    model: str = Field("", description="Or a save_pretrained folder, or a tiny-* preset (tiny-mbart, tiny-t5, tiny-gpt2, tiny-llama)")
    max_new_tokens: int = Field(0, ge=0, le=1024, description="Decoding length limit (0: the run's own, as its evaluation "
                                "decoded; 32 for a --model)")
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



def plan(cfg: Config) -> str:
    """For `lab check`: what will be served (the default run when none is given)."""
    return source_plan("exports to ONNX", cfg.run, cfg.model)


def run(cfg: Config, ctx: Run) -> None:
    import numpy as np
    import torch

    from labcli.serving.greedy import OnnxGenerator

    source = resolve(cfg.run, cfg.model)
    decoding = for_source(source, cfg.max_new_tokens)
    bundle = export_bundle(source, decoding)
    link_tree(bundle, ctx.path("onnx"))
    parity = read_json(ctx.path("onnx") / "parity.json")
    model, tokenizer = load_eager(source)
    threads = torch.get_num_threads()  # the launcher's LAB_THREADS: the same for both sides
    generator = OnnxGenerator(bundle, threads=threads)
    max_new = generator.meta["max_new_tokens"]

    ids, mask, dec = sample_tensors(model, tokenizer)
    big = [np.repeat(x, -(-cfg.batch // x.shape[0]), axis=0)[: cfg.batch] if x is not None else None for x in (ids, mask, dec)]
    forward = "one forward, no KV cache, LM head on the last position"
    cases = {"logits, batch 1": (ids[:1], mask[:1], None if dec is None else dec[:1]), f"logits, batch {cfg.batch}": tuple(big)}
    rows = []
    text = SAMPLE_TEXTS[0]
    n = max(1, cfg.repeats // 4)
    with last_position_head(model):
        for name, (i, m, d) in cases.items():
            rows.append({"case": name, "computes (both sides)": forward,
                         "eager_ms": timed(lambda i=i, m=m, d=d: eager_logits(model, i, m, d), cfg.repeats),
                         "onnxruntime_ms": timed(lambda i=i, m=m, d=d: generator.logits(i, m, d), cfg.repeats)})
        rows.append({"case": "greedy text, 1 sentence",
                     "computes (both sides)": f"greedy, up to {max_new} tokens, no KV cache (whole prefix each step), last-position head",
                     "eager_ms": timed(lambda: eager_generate(model, tokenizer, [text], decoding, use_cache=False), n),
                     "onnxruntime_ms": timed(lambda: generator.generate([text]), n)})
    rows.append({"case": "greedy text, 1 sentence, eager with KV cache",
                 "computes (both sides)": "eager only: transformers' default generate (KV cache); a different computation",
                 "eager_ms": timed(lambda: eager_generate(model, tokenizer, [text], decoding), n), "onnxruntime_ms": None})
    for row in rows:
        row["eager_ms"] = round(row["eager_ms"], 3)
        row["onnxruntime_ms"] = None if row["onnxruntime_ms"] is None else round(row["onnxruntime_ms"], 3)
        row["speedup"] = round(row["eager_ms"] / row["onnxruntime_ms"], 2) if row["onnxruntime_ms"] else None
        ctx.log(**row)
    runs.write_json(ctx.path("latency.json"), rows)
    plot([r for r in rows if r["onnxruntime_ms"]], ctx.path("latency.png"))
    summary = {"task": source.task, "model_dir": str(source.model_dir), "onnx": str(ctx.path("onnx")),
               "max_abs_diff": parity["max_abs_diff"], "tolerance": TOLERANCE, "parity_ok": parity["max_abs_diff"] <= TOLERANCE,
               "text_match": parity["text_match"], "export_s": parity["export_s"], "latency": rows, "threads": threads,
               "repeats": cfg.repeats, "hardware": hardware_line(), "load_average": [round(x, 2) for x in os.getloadavg()]}
    ctx.write_summary(summary)
    ctx.write_report(report(summary, parity))
    print(f"ONNX bundle: max |logits diff| {parity['max_abs_diff']:.1e} (<= {TOLERANCE}), greedy text identical to eager "
          f"on {len(parity['samples'])} samples")
    print_table(rows, COLUMNS, title=f"eager vs onnxruntime, median ms ({threads} threads)")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from labcli.eval.plots import save

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(x - 0.2, [r["eager_ms"] for r in rows], 0.4, label="eager (torch)")
    ax.bar(x + 0.2, [r["onnxruntime_ms"] for r in rows], 0.4, label="onnxruntime")
    ax.set_xticks(x, [r["case"] for r in rows])
    ax.set_ylabel("median latency (ms)")
    ax.set_title("eager vs onnxruntime, same computation (CPU)")
    ax.legend()
    fig.tight_layout()
    save(fig, path)


def report(summary: dict, parity: dict) -> str:
    lines = [f"# ONNX export of `{summary['model_dir']}`", "",
             f"- task: {summary['task']}; export {summary['export_s']} s (torch.onnx.export, dynamo=True, dynamic batch/sequence axes)",
             (f"- parity: max |logits diff| = {summary['max_abs_diff']:.2e} (tolerance {TOLERANCE}); greedy text identical: "
              f"{summary['text_match']} (a mismatch fails the export)"),
             (f"- timing: median of {summary['repeats']} calls after 2 warm-ups ({summary['repeats'] // 4 or 1} for greedy text); "
              f"{summary['threads']} threads on both sides; {summary['hardware']}; load average {summary['load_average']}"), "",
             markdown_table(summary["latency"], COLUMNS), "![latency](latency.png)", "",
             markdown_table([{"input": s["input"], "onnxruntime": s["onnx"], "eager": s["eager"]} for s in parity["samples"]])]
    return "\n".join(lines) + "\n"
