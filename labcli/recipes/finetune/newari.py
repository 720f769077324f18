"""`lab finetune newari`: English->Newari translation with full, LoRA or QLoRA, scored and analysed.

One method per process (so peak memory is that method's own); `--method all` runs the three as
sub-runs and writes one comparison table. Scores are on silver data: see labcli/data/newari/README.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field

from labcli import runs
from labcli.config import RecipeConfig, Section
from labcli.engine.trainer import TrainConfig
from labcli.errors import UserError
from labcli.eval.tables import markdown_table
from labcli.models.peft_prep import LoraSettings
from labcli.runs import Run

METHODS = ("full", "lora", "qlora")


class EvalSettings(Section):
    beams: list[int] = Field([1, 4], description="Decoding beams to score (1 = greedy)")
    batch_size: int = Field(64, ge=1, description="Sentences per generate() call")
    max_examples: int = Field(0, ge=0, description="Score at most N test sentences (0: all)")
    baseline: bool = Field(True, description="Also score the untrained model (greedy) for reference")
    no_repeat_ngram_size: int = Field(0, ge=0, description="Forbid repeating any n-gram of this size (0: off)")
    worst_n: int = Field(5, ge=0, description="Worst sentences per domain in the report")


RESUMABLE = True  # --resume continues from the newest checkpoint
MULTI_PROCESS = True  # --nproc N runs it under torch.distributed.run


class Config(RecipeConfig):
    model: str = Field("tiny-mbart", description="tiny-mbart, tiny-t5, tiny-llama, a folder, or a hub id")
    task: Literal["seq2seq", "causal-lm"] = Field("seq2seq", description="seq2seq, or causal-lm with a prompt")
    method: Literal["full", "lora", "qlora", "all"] = Field("qlora", description="all: the three, one table")
    lora: LoraSettings = LoraSettings()
    data: str | None = Field(None, description="en<TAB>new<TAB>domain TSV, hf:NAME, or the shipped corpus")
    src_lang: str | None = Field(None, description="Source language code (mBART-50: en_XX)")
    tgt_lang: str | None = Field(None, description="Target language code (mBART-50 proxy: ne_NP)")
    prompt: str = Field("Translate English to Newari.\nEnglish: {en}\nNewari:", description="causal-lm prompt")
    max_source_len: int = Field(48, ge=4)
    max_target_len: int = Field(48, ge=4)
    vocab_size: int = Field(4000, ge=100, description="Tokenizer size for tiny-* presets")
    dropout: float = Field(0.1, ge=0, le=1, description="Dropout of tiny-* presets")
    preset: dict = Field({}, description="Config overrides for tiny-* presets (e.g. d_model)")
    eval: EvalSettings = EvalSettings()
    eval_only: bool = Field(False, description="Only re-score the model of --run DIR")
    run: str | None = Field(None, description="A finished run folder (with --eval-only, or for serving)")
    profile: bool = Field(False, description="torch.profiler trace of a few steps + top-ops table")
    train: TrainConfig = TrainConfig()


def run(cfg: Config, ctx: Run) -> None:
    if cfg.eval_only:
        return evaluate_run(cfg, ctx)
    if cfg.method == "all":
        return run_all(cfg, ctx)
    return train_one(cfg, ctx)


def load_splits(cfg: Config):
    from labcli.data.newari import load_pairs, split

    splits = split(load_pairs(cfg.data))
    for name in ("train", "test"):
        if not splits[name]:
            raise UserError(f"the {name} split is empty ({sum(map(len, splits.values()))} pairs in all)",
                            "give more data: the split is 80/10/10 by a hash of the English side")
    return splits


def make_translator(cfg: Config, tokenizer):
    from labcli.models.translation import Translator

    return Translator(tokenizer, cfg.task, cfg.prompt, cfg.max_source_len, cfg.max_target_len, cfg.src_lang,
                      cfg.tgt_lang, cfg.eval.no_repeat_ngram_size)


def train_one(cfg: Config, ctx: Run) -> None:
    from labcli.engine.distributed import pick_device
    from labcli.engine.export import save_final_model
    from labcli.engine.trainer import train
    from labcli.eval.profiler import StepProfiler
    from labcli.models import load_model, prepare_for_method

    splits = load_splits(cfg)
    train_pairs = splits["train"]
    loaded = load_model(cfg.model, cfg.task, quantize_4bit=cfg.method == "qlora", vocab_size=cfg.vocab_size,
                        tokenizer_texts=lambda: [p.en for p in train_pairs] + [p.new for p in train_pairs],
                        preset_overrides=cfg.preset, dropout=cfg.dropout, seed=cfg.seed)
    translator = make_translator(cfg, loaded.tokenizer)
    test = test_subset(cfg, splits["test"])
    baseline = None
    if cfg.eval.baseline and ctx.is_main and ctx.resume_from is None:
        hyps, _ = translator.translate(loaded.model, [p.en for p in test], 1, cfg.eval.batch_size)
        from labcli.eval.translation import corpus_scores

        baseline = corpus_scores(hyps, [p.new for p in test])
        runs.write_json(ctx.path("baseline.json"), baseline)
    elif ctx.path("baseline.json").exists():
        baseline = json.loads(ctx.path("baseline.json").read_text())
    model, params = prepare_for_method(loaded.model, cfg.method, cfg.lora, cfg.task, seed=cfg.seed)
    encoded = [translator.encode(p.en, p.new) for p in train_pairs]
    dev = [translator.encode(p.en, p.new) for p in splits["dev"]]
    profiler = StepProfiler(ctx.path("profile"), pick_device(cfg.device), 5 if cfg.profile and ctx.is_main else 0)
    result = train(model, encoded, translator.collate, cfg.train, ctx, seed=cfg.seed, eval_set=dev or None,
                   callbacks=[profiler])
    save_final_model(result.model, loaded.tokenizer, cfg.method, ctx.path("model"), ctx.path("adapter"))
    if not ctx.is_main:
        return
    from labcli.models.loader import auto_class

    merged = auto_class(cfg.task).from_pretrained(str(ctx.path("model")))
    scores = score_and_report(cfg, ctx, merged, translator, test)
    summary = {"task": cfg.task, "model": cfg.model, "method": cfg.method, **params,
               "steps": result.steps, "final_loss": result.final_loss, "eval_loss": result.eval_loss,
               "tokens": result.tokens, "tokens_per_s": round(result.tokens / max(result.wall_s, 1e-9), 1),
               "wall_s": round(result.wall_s, 1), "peak_memory_mb": round(result.peak_memory_mb, 1),
               "untrained": baseline, **scores}
    ctx.write_summary(summary)
    write_report(ctx, cfg, summary)
    print_scores(ctx, summary)


def print_scores(ctx: Run, summary: dict) -> None:
    """The last lines a user sees: test scores per decoding, the untrained reference, where the report is."""
    for decoding, s in summary["scores"].items():
        a = s["by_domain"]["all"]
        print(f"test ({a['n']} sentences, {decoding}): BLEU {a['bleu']}  chrF++ {a['chrf++']}  TER {a['ter']}")
    if summary.get("untrained"):
        print(f"untrained model (greedy): chrF++ {summary['untrained']['chrf++']}")
    print(f"report: {ctx.path('report.md')}  (silver data: compare runs, don't over-read)")


def test_subset(cfg: Config, test):
    """A fixed, domain-balanced subset when max_examples is set (round-robin over domains)."""
    if not cfg.eval.max_examples or cfg.eval.max_examples >= len(test):
        return test
    by_domain: dict[str, list] = {}
    for p in test:
        by_domain.setdefault(p.domain, []).append(p)
    out, i = [], 0
    while len(out) < cfg.eval.max_examples:
        for rows in by_domain.values():
            if i < len(rows) and len(out) < cfg.eval.max_examples:
                out.append(rows[i])
        i += 1
    return out


def score_and_report(cfg: Config, ctx: Run, model, translator, test) -> dict:
    """Decode the test set with each beam size; write errors.jsonl and the per-domain chart."""
    from labcli.eval import plots
    from labcli.eval.translation import scores_by
    from labcli.eval.translation_errors import analyse

    out = {}
    sources, refs, domains = [p.en for p in test], [p.new for p in test], [p.domain for p in test]
    for beams in cfg.eval.beams:
        hyps, unks = translator.translate(model, sources, beams, cfg.eval.batch_size)
        key = "greedy" if beams == 1 else f"beam{beams}"
        analysis = analyse([{"src": s, "ref": r, "hyp": h, "domain": d, "unk": u}
                            for s, r, h, d, u in zip(sources, refs, hyps, domains, unks)], cfg.eval.worst_n)
        by_length = scores_by([r["length_bucket"] for r in analysis["records"]], hyps, refs)
        out[key] = {"by_domain": scores_by(domains, hyps, refs), "by_length": by_length,
                    "errors": {k: analysis[k] for k in ("rates", "counts", "length_ratio_mean", "length_ratio_median")},
                    "worst": analysis["worst"]}
        if key == "greedy" or "greedy" not in out:
            runs.write_text(ctx.path("errors.jsonl"), "".join(
                json.dumps(r, ensure_ascii=False) + "\n" for r in analysis["records"]))
    first = main_scores({"scores": out})
    chart = {d: {"chrF++": s["chrf++"], "BLEU": s["bleu"]} for d, s in first["by_domain"].items()}
    plots.bars(chart, ctx.path("scores_by_domain.png"), f"{cfg.model} {cfg.method}: test scores by domain")
    return {"scores": out, "bleu": first["by_domain"]["all"]["bleu"], "chrf++": first["by_domain"]["all"]["chrf++"],
            "ter": first["by_domain"]["all"]["ter"]}


def write_report(ctx: Run, cfg: Config, summary: dict) -> None:
    from labcli.eval import plots

    plots.curves(ctx.metrics(), ["loss", "eval_loss"], ctx.path("loss.png"), f"{cfg.model} ({cfg.method})")
    ctx.write_report(render(ctx, cfg, summary))


def evaluate_run(cfg: Config, ctx: Run) -> None:
    """--eval-only --run DIR: load DIR/model and score it again with this config's decoding."""
    from labcli.models import load_model

    if not cfg.run:
        raise UserError("--eval-only needs --run DIR", "pass the folder of a finished `lab finetune newari` run")
    src = Path(cfg.run)
    if not (src / "model" / "config.json").exists():
        raise UserError(f"{src} has no model/ folder", "pass a finished run folder (it holds model/ and summary.json)")
    previous = json.loads((src / "summary.json").read_text()) if (src / "summary.json").exists() else {}
    loaded = load_model(str(src / "model"), previous.get("task", cfg.task))
    cfg = cfg.model_copy(update={"task": loaded.task, "method": previous.get("method", cfg.method)})
    translator = make_translator(cfg, loaded.tokenizer)
    test = test_subset(cfg, load_splits(cfg)["test"])
    scores = score_and_report(cfg, ctx, loaded.model, translator, test)
    summary = {**{k: previous.get(k) for k in ("task", "model", "method")}, "rescored_run": str(src), **scores}
    ctx.write_summary(summary)
    ctx.write_report(render(ctx, cfg, summary))
    print_scores(ctx, summary)


def run_all(cfg: Config, ctx: Run) -> None:
    """Each method in its own process (honest peak memory), then one comparison table and chart."""
    from labcli.eval import plots

    summaries = {}
    for method in METHODS:
        sub = ctx.dir / method
        if not (sub / "summary.json").exists():
            cmd = [sys.executable, "-m", "labcli", "finetune", "--config", str(ctx.path("config.yaml")),
                   f"method={method}", "--output", str(sub)] + (["--resume", "auto"] if ctx.resume_from else [])
            if subprocess.call(cmd) != 0:
                raise UserError(f"the {method} sub-run failed (see above)", f"fix it, then rerun with --resume auto --output {ctx.dir}")
        summaries[method] = json.loads((sub / "summary.json").read_text())
    chart = {d: {m: main_scores(s)["by_domain"][d]["chrf++"] for m, s in summaries.items()}
             for d in main_scores(summaries["full"])["by_domain"]}
    plots.bars(chart, ctx.path("chrf_by_domain.png"), "test chrF++ by domain and method", "chrF++")
    table = comparison_table(summaries)
    ctx.write_summary({"task": cfg.task, "model": cfg.model, "method": "all", "methods": summaries})
    ctx.write_report(f"# lab finetune newari --method all\n\nModel `{cfg.model}`; data: shipped silver corpus "
                     f"(see labcli/data/newari/README.md).\n\n{table}\n\n![chrF++ by domain](chrf_by_domain.png)\n")
    print(table)


# ---------------------------------------------------------------- the report

SILVER = ("Data: the shipped English-Newari corpus, split 80/10/10 by a hash of the English side. "
          "Its sentence pairs are silver (partly machine-translated; see labcli/data/newari/README.md): "
          "compare methods with these scores, do not read them as human-reference quality.")


def _scores_table(groups: dict) -> str:
    return markdown_table([[g, s["n"], s["bleu"], s["chrf++"], s["ter"]] for g, s in groups.items()],
                          ["group", "n", "BLEU", "chrF++", "TER"])


def render(ctx, cfg, summary: dict) -> str:
    parts = [f"# lab finetune newari: {summary.get('model')} ({summary.get('method')})", "", SILVER, "",
             f"Decoding: max {cfg.max_target_len} new tokens, no_repeat_ngram_size {cfg.eval.no_repeat_ngram_size}.", ""]
    if "trainable_params" in summary:
        training = [[f"{summary['trainable_params']:,}", f"{summary['total_params']:,}", f"{summary['weight_bytes']:,}",
                     summary["steps"], f"{summary['final_loss']:.4f}",
                     f"{summary['eval_loss']:.4f}" if summary.get("eval_loss") else "-",
                     summary["tokens_per_s"], summary["wall_s"], summary["peak_memory_mb"]]]
        parts += ["## Training", "", markdown_table(training, ["trainable params", "total params", "weight bytes", "steps",
                                                               "final loss", "eval loss", "tokens/s", "wall s",
                                                               "peak memory MB"]),
                  "", "![loss](loss.png)", ""]
    if summary.get("untrained"):
        u = summary["untrained"]
        parts += [f"Untrained model (greedy, same test set): BLEU {u['bleu']}, chrF++ {u['chrf++']}, TER {u['ter']}.", ""]
    for decoding, s in summary["scores"].items():
        parts += [f"## Test scores, {decoding} decoding", "", "By domain:", "", _scores_table(s["by_domain"]), "",
                  "By source length:", "", _scores_table(s["by_length"]), "",
                  "Error rates (share of test sentences):", "",
                  markdown_table([list(s["errors"]["rates"].values()) + [s["errors"]["length_ratio_mean"],
                                                                          s["errors"]["length_ratio_median"]]],
                                 list(s["errors"]["rates"]) + ["length ratio mean", "median"]), ""]
    sig = next(iter(summary["scores"].values()))["by_domain"]["all"]
    parts += ["Signatures: " + "; ".join(f"`{sig[k + '_signature']}`" for k in ("bleu", "chrf++", "ter")), "",
              "![scores by domain](scores_by_domain.png)", ""]
    worst = next(iter(summary["scores"].values()))["worst"]
    if worst:
        parts += ["## Worst sentences by domain (sentence chrF++)", ""]
        for domain, recs in worst.items():
            parts += [f"### {domain}", "", markdown_table([[r["chrf++"], r["src"], r["ref"], r["hyp"] or "(empty)"] for r in recs],
                                                          ["chrF++", "source", "reference", "hypothesis"]), ""]
    return "\n".join(parts)


def comparison_table(summaries: dict[str, dict]) -> str:
    """The `--method all` table: cost and quality per method, overall and per domain (chrF++)."""
    first = next(iter(summaries.values()))
    domains = sorted(d for d in main_scores(first)["by_domain"] if d != "all")
    headers = ["method", "trainable", "total", "weight MB", "peak MB", "tokens/s", "wall s", "BLEU", "chrF++", "TER"]
    headers += [f"chrF++ {d}" for d in domains]
    rows = []
    for method, s in summaries.items():
        scores = main_scores(s)
        rows.append([method, f"{s['trainable_params']:,}", f"{s['total_params']:,}", f"{s['weight_bytes'] / 2**20:.2f}",
                     s["peak_memory_mb"], s["tokens_per_s"], s["wall_s"], s["bleu"], s["chrf++"], s["ter"]]
                    + [scores["by_domain"][d]["chrf++"] for d in domains])
    return SILVER + "\n\n" + markdown_table(rows, headers)


def main_scores(summary: dict) -> dict:
    """Greedy scores when they were computed, else the first decoding's."""
    return summary["scores"].get("greedy") or next(iter(summary["scores"].values()))
