"""`lab finetune newari`: English->Newari translation with full, LoRA or QLoRA, scored and analysed.

The default base, `tiny-mbart-pretrained`, is the tiny mBART after denoising pretraining on the
shipped English and Newari text (`lab finetune newari-pretrain`, built once and cached), so QLoRA
quantizes a trained base, as QLoRA means. The lexicon and UI strings are training data; the
headline test is the held-out sentence pairs (per domain), scored greedy with and without a
no-repeat constraint, next to a word-by-word dictionary baseline and the base before finetuning;
held-out lexicon words are a separate "unseen single words" diagnostic.

One method per process (so peak memory is that method's own); `--method all` runs the three as
sub-runs (plus QLoRA on the random-init base for comparison) and writes one table. Scores are on
silver data: see labcli/data/newari/README.md.
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
from labcli.data.newari import LEXICON_DOMAINS, RESOURCE_DOMAINS
from labcli.engine.trainer import TrainConfig
from labcli.errors import UserError
from labcli.eval.tables import markdown_table
from labcli.models.peft_prep import LoraSettings
from labcli.runs import Run

METHODS = ("full", "lora", "qlora")
RANDOM_BASE = "tiny-mbart"  # what the pretrained preset starts from: the comparison row of --method all


class EvalSettings(Section):
    split: Literal["test", "dev"] = Field("test", description="Score the held-out test pairs, or dev (for tuning)")
    beams: list[int] = Field([1], description="Decoding beams to score (1 = greedy, the headline)")
    batch_size: int = Field(64, ge=1, description="Sentences per generate() call")
    max_examples: int = Field(0, ge=0, description="Score at most N sentences (0: all)")
    no_repeat_ngram_size: int = Field(0, ge=0, description="The headline decoding's no-repeat n-gram size (0: off); "
                                                           "serving uses it too")
    compare_no_repeat_ngram_size: int | None = Field(3, ge=0, description="Also score greedy with this no-repeat size "
                                                                          "(shows what the constraint hides); null: don't")
    baseline: bool = Field(True, description="Also score the base model before finetuning (greedy)")
    dictionary: bool = Field(True, description="Also score the word-by-word dictionary baseline")
    unseen_words: bool = Field(True, description="Also score held-out lexicon words (the 'unseen single words' diagnostic)")
    worst_n: int = Field(5, ge=0, description="Worst sentences per domain in the report")


RESUMABLE = True  # --resume continues from the newest checkpoint
MULTI_PROCESS = True  # --nproc N runs it under torch.distributed.run


class Config(RecipeConfig):
    model: str = Field("tiny-mbart-pretrained", description="tiny-mbart-pretrained, tiny-mbart (random init), tiny-t5, "
                                                            "tiny-llama, a folder, or a hub id")
    task: Literal["seq2seq", "causal-lm"] = Field("seq2seq", description="seq2seq, or causal-lm with a prompt")
    method: Literal["full", "lora", "qlora", "all"] = Field("qlora", description="all: the three, one table")
    lora: LoraSettings = LoraSettings()
    data: str | None = Field(None, description="en<TAB>new<TAB>domain TSV, hf:NAME, or the shipped corpus")
    lexicon_domains: list[str] = Field(list(LEXICON_DOMAINS), description="Word-list domains: trained on; their "
                                       "held-out words are the 'unseen single words' diagnostic, not the test")
    resource_domains: list[str] = Field(list(RESOURCE_DOMAINS), description="Domains used for training only (all splits)")
    src_lang: str | None = Field(None, description="Source language code (mBART-50: en_XX)")
    tgt_lang: str | None = Field(None, description="Target language code/token (mBART-50 proxy: ne_NP; lab's tiny "
                                                   "tokenizers: <new>)")
    prompt: str = Field("Translate English to Newari.\nEnglish: {en}\nNewari:", description="causal-lm prompt")
    max_source_len: int = Field(48, ge=4)
    max_target_len: int = Field(48, ge=4)
    vocab_size: int = Field(4000, ge=100, description="Tokenizer size for tiny-* presets")
    dropout: float = Field(0.1, ge=0, le=1, description="Dropout of random-init tiny-* presets")
    preset: dict = Field({}, description="Config overrides for tiny-* presets (e.g. d_model)")
    pretrain: list[str] = Field([], description="Overrides for the newari-pretrain run that builds a pretrained "
                                                "preset, e.g. [train.max_steps=300] (part of its cache key)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the training loss")
    compare_random_base: bool = Field(True, description=f"--method all on a pretrained preset: also QLoRA on "
                                                        f"{RANDOM_BASE} (random init) for comparison")
    jobs: int = Field(1, ge=1, description="--method all: sub-runs at once (each its own process; their wall times "
                                           "then share the CPU)")
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


def plan(cfg: Config) -> str:
    from labcli.models.presets import PRETRAINED

    t = cfg.train
    steps = f"{cfg.method} finetune, {t.max_steps} steps of {t.batch_size} pairs, lr {t.lr}"
    if cfg.model in PRETRAINED:
        _, verb, recipe = PRETRAINED[cfg.model]
        return f"{cfg.model}: built once by `lab {verb} {recipe}` (cached under LAB_HOME); then {steps}"
    return steps


def load_splits(cfg: Config):
    from labcli.data.newari import load_pairs, task_splits

    pairs = load_pairs(cfg.data)
    splits = task_splits(pairs, cfg.lexicon_domains, cfg.resource_domains)
    for name in ("train", cfg.eval.split):
        if not getattr(splits, name):
            raise UserError(f"the {name} split has no sentence pairs ({len(pairs)} pairs in all)",
                            "give more data: the split is 80/10/10 by a hash of the English side, and "
                            f"domains {cfg.lexicon_domains + cfg.resource_domains} are not test sentences")
    return pairs, splits


def pretrain_overrides(cfg: Config, pairs) -> list[str]:
    """The newari-pretrain command for this config: its cache key (with that recipe's YAML)."""
    from labcli.data.newari.monolingual import inputs_digest

    out = [f"seed={cfg.seed}", f"vocab_size={cfg.vocab_size}", f"data_digest={inputs_digest(pairs)}"]
    out += [f"data={cfg.data}"] if cfg.data else []
    out += [f"preset={json.dumps(cfg.preset)}"] if cfg.preset else []
    if list(cfg.lexicon_domains) != list(LEXICON_DOMAINS) or list(cfg.resource_domains) != list(RESOURCE_DOMAINS):
        out += [f"lexicon_domains={json.dumps(cfg.lexicon_domains)}", f"resource_domains={json.dumps(cfg.resource_domains)}"]
    return out + list(cfg.pretrain)


def load_base(cfg: Config, pairs, train_pairs):
    """The model to finetune: a pretrained preset (built once), a random-init tiny-* preset, a folder or hub id."""
    from labcli.data.newari.denoising import SPECIAL_TOKENS
    from labcli.models import load_model, presets

    quantize = cfg.method == "qlora"
    if cfg.model in presets.PRETRAINED:
        folder = presets.pretrained_base(cfg.model, pretrain_overrides(cfg, pairs), f"base model {cfg.model}")
        return load_model(str(folder), cfg.task, quantize_4bit=quantize)
    specials = SPECIAL_TOKENS if cfg.model.startswith("tiny-") and cfg.task == "seq2seq" else ()
    return load_model(cfg.model, cfg.task, quantize_4bit=quantize, vocab_size=cfg.vocab_size, extra_specials=specials,
                      tokenizer_texts=lambda: [p.en for p in train_pairs] + [p.new for p in train_pairs],
                      preset_overrides=cfg.preset, dropout=cfg.dropout, seed=cfg.seed)


def make_translator(cfg: Config, tokenizer):
    from labcli.models.translation import Translator

    return Translator(tokenizer, cfg.task, cfg.prompt, cfg.max_source_len, cfg.max_target_len, cfg.src_lang,
                      cfg.tgt_lang, cfg.eval.no_repeat_ngram_size)


def smoothed_loss(epsilon: float):
    """The model's cross-entropy, with label smoothing when epsilon > 0 (labels -100 ignored)."""
    import torch.nn.functional as F

    def loss_fn(model, batch):
        out = model(**batch)
        if not epsilon:
            return out.loss
        logits, labels = out.logits, batch["labels"]
        if logits.shape[1] != labels.shape[1]:  # causal LM: predict token t+1 from t
            logits, labels = logits[:, :-1], labels[:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100,
                               label_smoothing=epsilon)

    return loss_fn


def train_one(cfg: Config, ctx: Run) -> None:
    from labcli.engine.distributed import pick_device
    from labcli.engine.export import save_final_model
    from labcli.engine.trainer import train
    from labcli.eval.profiler import StepProfiler
    from labcli.models import prepare_for_method

    pairs, splits = load_splits(cfg)
    loaded = load_base(cfg, pairs, splits.train)
    translator = make_translator(cfg, loaded.tokenizer)
    test, words = eval_sets(cfg, splits)
    untrained = None
    if cfg.eval.baseline and ctx.is_main and ctx.resume_from is None:
        untrained = untrained_scores(translator, loaded.model, test, cfg.eval.batch_size)
        runs.write_json(ctx.path("baseline.json"), untrained)
    elif ctx.path("baseline.json").exists():
        untrained = json.loads(ctx.path("baseline.json").read_text())
    model, params = prepare_for_method(loaded.model, cfg.method, cfg.lora, cfg.task, seed=cfg.seed)
    encoded = [translator.encode(p.en, p.new) for p in splits.train]
    dev = [translator.encode(p.en, p.new) for p in splits.dev]
    profiler = StepProfiler(ctx.path("profile"), pick_device(cfg.device), 5 if cfg.profile and ctx.is_main else 0)
    result = train(model, encoded, translator.collate, cfg.train, ctx, seed=cfg.seed, eval_set=dev or None,
                   callbacks=[profiler], loss_fn=smoothed_loss(cfg.label_smoothing))
    if translator.tgt_lang_id is not None:  # served models start with the language token too
        result.model.generation_config.forced_bos_token_id = translator.tgt_lang_id
    save_final_model(result.model, loaded.tokenizer, cfg.method, ctx.path("model"), ctx.path("adapter"))
    if not ctx.is_main:
        return
    from labcli.models.loader import auto_class

    merged = auto_class(cfg.task).from_pretrained(str(ctx.path("model")))
    scores = score_and_report(cfg, ctx, merged, translator, test, words, splits.train)
    summary = {"task": cfg.task, "model": cfg.model, "method": cfg.method, "base": loaded.source, **params,
               "steps": result.steps, "final_loss": result.final_loss, "eval_loss": result.eval_loss,
               "tokens": result.tokens, "tokens_per_s": round(result.tokens / max(result.wall_s, 1e-9), 1),
               "wall_s": round(result.wall_s, 1), "peak_memory_mb": round(result.peak_memory_mb, 1),
               "untrained": untrained, **scores}
    summary["table"] = result_rows(summary)
    ctx.write_summary(summary)
    write_report(ctx, cfg, summary)
    print_scores(ctx, summary)


def result_rows(summary: dict) -> list[dict]:
    """The run's headline table: baselines and each decoding on the same sentences (chrF++ per domain)."""
    domains = sorted(d for d in summary["scores"]["greedy"]["by_domain"] if d != "all")
    rows = []

    def row(system, by_domain, loops, stopped):
        rows.append({"system": system, "chrF++": by_domain["all"]["chrf++"], "BLEU": by_domain["all"]["bleu"],
                     "TER": by_domain["all"]["ter"], **{f"chrF++ {d}": by_domain.get(d, {}).get("chrf++") for d in domains},
                     "loops": loops, "stopped": stopped})

    if summary.get("dictionary"):
        row("dictionary (word by word)", summary["dictionary"]["by_domain"], summary["dictionary"]["loops"], None)
    if summary.get("untrained") and "by_domain" in summary["untrained"]:
        u = summary["untrained"]
        row("base before finetuning (greedy)", u["by_domain"], u["loops"], u["stopped"])
    for s in summary["scores"].values():
        rates = s["errors"]["rates"]
        row(f"{summary.get('method')}: {s['decoding']}", s["by_domain"], rates["repetition_loop"], rates["stopped"])
    return rows


def eval_sets(cfg: Config, splits):
    """(sentence pairs to score, held-out lexicon words) of the chosen split."""
    test = splits.test if cfg.eval.split == "test" else splits.dev
    words = splits.test_words if cfg.eval.split == "test" else splits.dev_words
    return balanced_subset(test, cfg.eval.max_examples), balanced_subset(words, cfg.eval.max_examples)


def untrained_scores(translator, model, test, batch_size: int) -> dict:
    from labcli.eval.translation import corpus_scores, scores_by
    from labcli.eval.translation_errors import repetition_loop

    out = translator.decode(model, [p.en for p in test], 1, batch_size)
    return {**corpus_scores(out.hyps, [p.new for p in test]),
            "by_domain": scores_by([p.domain for p in test], out.hyps, [p.new for p in test]),
            "loops": round(sum(map(repetition_loop, out.hyps)) / max(len(test), 1), 4),
            "stopped": round(sum(out.stopped) / max(len(test), 1), 4)}


def print_scores(ctx: Run, summary: dict) -> None:
    """The last lines a user sees: the headline (greedy) scores, each decoding, baselines, diagnostics."""
    split = summary.get("split", "test")
    if summary.get("table"):
        from labcli.eval.tables import print_table

        shown = [{k: (f"{v:.0%}" if k in ("loops", "stopped") else f"{v:.2f}") if isinstance(v, float) else v
                  for k, v in r.items()} for r in summary["table"]]
        print_table(shown, title=f"lab finetune newari: {summary.get('model')} ({summary.get('method')}), "
                                            f"{split} sentences")
    for s in summary["scores"].values():
        a, e = s["by_domain"]["all"], s["errors"]
        domains = ", ".join(f"{d} {v['chrf++']}" for d, v in s["by_domain"].items() if d != "all")
        print(f"{split} ({a['n']} sentences, {s['decoding']}): chrF++ {a['chrf++']} ({domains})  BLEU {a['bleu']}  "
              f"TER {a['ter']}  loops {e['rates']['repetition_loop']:.0%}  stopped by EOS {e['rates']['stopped']:.0%}")
    if summary.get("unseen_words"):
        w = summary["unseen_words"]
        print(f"unseen single words ({w['n']} held-out lexicon entries, diagnostic): exact match {w['exact_match']:.1%}, "
              f"chrF++ {w['chrf++']}")
    print("(silver data: compare runs, don't over-read)")


def balanced_subset(rows, max_examples: int):
    """A fixed, domain-balanced subset when max_examples is set (round-robin over domains)."""
    if not max_examples or max_examples >= len(rows):
        return rows
    by_domain: dict[str, list] = {}
    for p in rows:
        by_domain.setdefault(p.domain, []).append(p)
    out, i = [], 0
    while len(out) < max_examples:
        for group in by_domain.values():
            if i < len(group) and len(out) < max_examples:
                out.append(group[i])
        i += 1
    return out


def decodings(cfg: Config) -> list[tuple[str, int, int]]:
    """(key, beams, no_repeat_ngram_size) of each scored decoding; "greedy" is the headline."""
    nr = cfg.eval.no_repeat_ngram_size
    out = [("greedy" if b == 1 else f"beam{b}", b, nr) for b in dict.fromkeys([1, *cfg.eval.beams])]
    other = cfg.eval.compare_no_repeat_ngram_size
    if other is not None and other != nr:
        out.append((f"greedy-nr{other}", 1, other))
    return out


def score_and_report(cfg: Config, ctx: Run, model, translator, test, words, train_pairs) -> dict:
    """Decode the sentences with each decoding; baselines and the word diagnostic; errors.jsonl and chart."""
    from labcli.eval import plots

    out = {}
    sources, refs, domains = [p.en for p in test], [p.new for p in test], [p.domain for p in test]
    for key, beams, nr in decodings(cfg):
        decoded = translator.decode(model, sources, beams, cfg.eval.batch_size, no_repeat_ngram_size=nr)
        analysis = analyse(sources, refs, domains, decoded, cfg.eval.worst_n)
        label = ("greedy" if beams == 1 else f"beam {beams}") + f", no_repeat_ngram_size {nr}"
        out[key] = {"decoding": label, "beams": beams, "no_repeat_ngram_size": nr, **analysis["scores"]}
        if key == "greedy":
            runs.write_text(ctx.path("errors.jsonl"), "".join(
                json.dumps(r, ensure_ascii=False) + "\n" for r in analysis["records"]))
    head = out["greedy"]["by_domain"]
    chart = {d: {"chrF++": s["chrf++"], "BLEU": s["bleu"]} for d, s in head.items()}
    plots.bars(chart, ctx.path("scores_by_domain.png"), f"{cfg.model} {cfg.method}: {cfg.eval.split} scores by domain")
    result = {"split": cfg.eval.split, "scores": out, "bleu": head["all"]["bleu"], "chrf++": head["all"]["chrf++"],
              "ter": head["all"]["ter"], "loops": out["greedy"]["errors"]["rates"]["repetition_loop"],
              "stopped": out["greedy"]["errors"]["rates"]["stopped"]}
    if cfg.eval.dictionary:
        result["dictionary"] = dictionary_scores(cfg, train_pairs, sources, refs, domains)
    if cfg.eval.unseen_words and words:
        result["unseen_words"] = word_scores(translator, model, words, cfg.eval.batch_size)
    return result


def analyse(sources, refs, domains, decoded, worst_n: int) -> dict:
    from labcli.eval.translation import scores_by
    from labcli.eval.translation_errors import analyse as analyse_errors

    analysis = analyse_errors([{"src": s, "ref": r, "hyp": h, "domain": d, "unk": u, "stopped": st}
                               for s, r, h, d, u, st in zip(sources, refs, decoded.hyps, domains, decoded.unks,
                                                            decoded.stopped)], worst_n)
    by_length = scores_by([r["length_bucket"] for r in analysis["records"]], decoded.hyps, refs)
    errors = {k: analysis[k] for k in ("rates", "counts", "length_ratio_mean", "length_ratio_median")}
    errors["rates"]["stopped"] = round(sum(decoded.stopped) / max(len(sources), 1), 4)
    return {"scores": {"by_domain": scores_by(domains, decoded.hyps, refs), "by_length": by_length, "errors": errors,
                       "worst": analysis["worst"]}, "records": analysis["records"]}


def dictionary_scores(cfg: Config, train_pairs, sources, refs, domains) -> dict:
    """The word-by-word lexicon baseline on the same sentences (lexicon = training split of the lexicon domains)."""
    from labcli.eval.translation import scores_by
    from labcli.eval.translation_baseline import WordByWord
    from labcli.eval.translation_errors import repetition_loop

    baseline = WordByWord([(p.en, p.new) for p in train_pairs if p.domain in cfg.lexicon_domains])
    hyps = baseline.translate(sources)
    return {"by_domain": scores_by(domains, hyps, refs), "coverage": round(baseline.coverage(sources), 4),
            "loops": round(sum(map(repetition_loop, hyps)) / max(len(hyps), 1), 4),
            "examples": [{"src": s, "hyp": h, "ref": r} for s, h, r in list(zip(sources, hyps, refs))[:3]]}


def word_scores(translator, model, words, batch_size: int) -> dict:
    """Held-out lexicon entries, greedy: exact match against any of a word's glosses, and chrF++ per entry."""
    from labcli.eval.translation import clean, corpus_scores

    unique = list(dict.fromkeys(p.en for p in words))
    hyps = dict(zip(unique, translator.decode(model, unique, 1, batch_size).hyps))
    glosses: dict[str, set] = {}
    for p in words:
        glosses.setdefault(p.en, set()).add(clean(p.new))
    exact = sum(clean(hyps[en]) in refs for en, refs in glosses.items()) / max(len(glosses), 1)
    scores = corpus_scores([hyps[p.en] for p in words], [p.new for p in words])
    return {"n": len(unique), "entries": len(words), "exact_match": round(exact, 4), "chrf++": scores["chrf++"],
            "examples": [{"src": en, "hyp": hyps[en], "refs": sorted(glosses[en])} for en in unique[:5]]}


def write_report(ctx: Run, cfg: Config, summary: dict) -> None:
    from labcli.eval import plots

    plots.curves(ctx.metrics(), ["loss", "eval_loss"], ctx.path("loss.png"), f"{cfg.model} ({cfg.method})")
    ctx.write_report(render(ctx, cfg, summary))


def evaluate_run(cfg: Config, ctx: Run) -> None:
    """--eval-only --run DIR: load DIR/model and score it again with this config's decoding
    (and the language codes the run was trained with)."""
    import yaml

    from labcli.models import load_model

    if not cfg.run:
        raise UserError("--eval-only needs --run DIR", "pass the folder of a finished `lab finetune newari` run")
    src = Path(cfg.run)
    if not (src / "model" / "config.json").exists():
        raise UserError(f"{src} has no model/ folder", "pass a finished run folder (it holds model/ and summary.json)")
    previous = json.loads((src / "summary.json").read_text()) if (src / "summary.json").exists() else {}
    trained_with = yaml.safe_load((src / "config.yaml").read_text()) if (src / "config.yaml").exists() else {}
    loaded = load_model(str(src / "model"), previous.get("task", cfg.task))
    languages = {k: trained_with[k] for k in ("src_lang", "tgt_lang") if k in (trained_with or {})}
    cfg = cfg.model_copy(update={"task": loaded.task, "method": previous.get("method", cfg.method), **languages})
    translator = make_translator(cfg, loaded.tokenizer)
    _, splits = load_splits(cfg)
    test, words = eval_sets(cfg, splits)
    scores = score_and_report(cfg, ctx, loaded.model, translator, test, words, splits.train)
    summary = {**{k: previous.get(k) for k in ("task", "model", "method")}, "rescored_run": str(src), **scores}
    summary["table"] = result_rows(summary)
    ctx.write_summary(summary)
    ctx.write_report(render(ctx, cfg, summary))
    print_scores(ctx, summary)


# ---------------------------------------------------------------- --method all


def run_all(cfg: Config, ctx: Run) -> None:
    """Each method in its own process (honest peak memory), then one comparison table and chart."""
    from labcli.eval import plots
    from labcli.models.presets import PRETRAINED, pretrained_base

    plan = [(m, m, []) for m in METHODS]
    if cfg.model in PRETRAINED:  # built here once, so sub-runs running at once never build it together
        pretrained_base(cfg.model, pretrain_overrides(cfg, load_splits(cfg)[0]), f"base model {cfg.model}")
    if cfg.compare_random_base and cfg.model in PRETRAINED:
        plan.append(("qlora-random-base", "qlora", [f"model={PRETRAINED[cfg.model][0]}"]))
    todo = [(name, [sys.executable, "-m", "labcli", "finetune", "--config", str(ctx.path("config.yaml")), f"method={method}",
                    *extra, "--output", str(ctx.dir / name)] + (["--resume", "auto"] if ctx.resume_from else []))
            for name, method, extra in plan if not (ctx.dir / name / "summary.json").exists()]
    failed = run_sub_runs(todo, cfg.jobs)
    if failed:
        raise UserError(f"the {', '.join(failed)} sub-run(s) failed (see above)",
                        f"fix it, then rerun with --resume auto --output {ctx.dir}")
    summaries = {name: json.loads((ctx.dir / name / "summary.json").read_text()) for name, _, _ in plan}
    rows = comparison_rows(cfg, summaries)
    chart = {d: {r["row"]: r[f"chrF++ {d}"] for r in rows} for d in domains_of(summaries["full"])}
    plots.bars(chart, ctx.path("chrf_by_domain.png"), f"{cfg.eval.split} chrF++ by domain (greedy)", "chrF++")
    table = markdown_table(rows)
    ctx.write_summary({"task": cfg.task, "model": cfg.model, "method": "all", "split": cfg.eval.split, "rows": rows,
                       "methods": summaries})
    ctx.write_report(f"# lab finetune newari --method all\n\nBase `{cfg.model}`; {SILVER}\n\n{ROWS_NOTE}\n\n{table}\n\n"
                     f"![chrF++ by domain](chrf_by_domain.png)\n")
    print(table)


def run_sub_runs(todo: list[tuple[str, list[str]]], jobs: int) -> list[str]:
    """Run the (name, command) sub-runs, at most `jobs` at once; the names of those that failed."""
    import time

    failed, running, waiting = [], [], list(todo)
    while waiting or running:
        while waiting and len(running) < jobs:
            name, cmd = waiting.pop(0)
            running.append((name, subprocess.Popen(cmd)))
        time.sleep(0.2)
        for name, proc in [r for r in running if r[1].poll() is not None]:
            running.remove((name, proc))
            failed += [name] if proc.returncode != 0 else []
    return failed


SILVER = ("Data: the shipped English-Newari corpus, split 80/10/10 by a hash of the English side; the lexicon and UI "
          "strings are training data, the scores are on held-out sentence pairs. The sentence pairs are silver "
          "(partly machine-translated; see labcli/data/newari/README.md): compare rows, do not read them as "
          "human-reference quality.")
ROWS_NOTE = ("chrF++ / BLEU / TER: greedy, no decoding constraint; 'nr3': greedy with no_repeat_ngram_size 3; loops: "
             "outputs with a word n-gram repeated 3 times in a row; stopped: outputs the model ended itself (EOS) "
             "before the length limit; unseen words: exact match on held-out lexicon entries (a diagnostic).")


def domains_of(summary: dict) -> list[str]:
    return sorted(d for d in summary["scores"]["greedy"]["by_domain"] if d != "all")


def comparison_rows(cfg: Config, summaries: dict[str, dict]) -> list[dict]:
    """One row per system on the same sentences: the dictionary baseline, then each trained run."""
    first = summaries["full"]
    domains = domains_of(first)
    rows = []
    if first.get("dictionary"):
        d = first["dictionary"]
        rows.append({"row": "dictionary (word by word)", "base": "-", "trainable": None, "wall s": None,
                     "chrF++": d["by_domain"]["all"]["chrf++"], "chrF++ nr3": None, "BLEU": d["by_domain"]["all"]["bleu"],
                     "TER": d["by_domain"]["all"]["ter"],
                     **{f"chrF++ {dom}": d["by_domain"][dom]["chrf++"] for dom in domains},
                     "loops": d["loops"], "loops nr3": None, "stopped": None, "unseen words": None})
    for name, s in summaries.items():
        greedy = s["scores"]["greedy"]
        nr3 = next((v for k, v in s["scores"].items() if k.startswith("greedy-nr")), None)
        rows.append({"row": name, "base": s["model"], "trainable": s["trainable_params"], "wall s": s["wall_s"],
                     "chrF++": greedy["by_domain"]["all"]["chrf++"],
                     "chrF++ nr3": nr3["by_domain"]["all"]["chrf++"] if nr3 else None,
                     "BLEU": greedy["by_domain"]["all"]["bleu"], "TER": greedy["by_domain"]["all"]["ter"],
                     **{f"chrF++ {dom}": greedy["by_domain"][dom]["chrf++"] for dom in domains},
                     "loops": greedy["errors"]["rates"]["repetition_loop"],
                     "loops nr3": nr3["errors"]["rates"]["repetition_loop"] if nr3 else None,
                     "stopped": greedy["errors"]["rates"]["stopped"],
                     "unseen words": (s.get("unseen_words") or {}).get("exact_match")})
    return rows


# ---------------------------------------------------------------- the report


def _scores_table(groups: dict) -> str:
    return markdown_table([[g, s["n"], s["bleu"], s["chrf++"], s["ter"]] for g, s in groups.items()],
                          ["group", "n", "BLEU", "chrF++", "TER"])


def render(ctx, cfg, summary: dict) -> str:
    parts = [f"# lab finetune newari: {summary.get('model')} ({summary.get('method')})", "", SILVER, "",
             f"Scored on the {summary.get('split', 'test')} split; max {cfg.max_target_len} new tokens.", ""]
    if "trainable_params" in summary:
        training = [[f"{summary['trainable_params']:,}", f"{summary['total_params']:,}", f"{summary['weight_bytes']:,}",
                     summary["steps"], f"{summary['final_loss']:.4f}",
                     f"{summary['eval_loss']:.4f}" if summary.get("eval_loss") else "-",
                     summary["tokens_per_s"], summary["wall_s"], summary["peak_memory_mb"]]]
        parts += ["## Training", "", f"Base: `{summary.get('base')}`.", "",
                  markdown_table(training, ["trainable params", "total params", "weight bytes", "steps", "final loss",
                                            "dev loss", "tokens/s", "wall s", "peak memory MB"]),
                  "", "![loss](loss.png)", ""]
    baselines = []
    if summary.get("dictionary"):
        d = summary["dictionary"]
        baselines.append([f"dictionary, word by word (lexicon covers {d['coverage']:.0%} of the words)",
                          d["by_domain"]["all"]["bleu"],
                          d["by_domain"]["all"]["chrf++"], d["by_domain"]["all"]["ter"], d["loops"], "-"])
    if summary.get("untrained"):
        u = summary["untrained"]
        baselines.append(["base before finetuning (greedy)", u["bleu"], u["chrf++"], u["ter"], u.get("loops"),
                          u.get("stopped")])
    if baselines:
        parts += ["## Baselines (same sentences)", "",
                  markdown_table(baselines, ["system", "BLEU", "chrF++", "TER", "loops", "stopped by EOS"]), ""]
    for key, s in summary["scores"].items():
        rates = s["errors"]["rates"]
        parts += [f"## Scores, {s.get('decoding', key)}", "", "By domain:", "", _scores_table(s["by_domain"]), "",
                  "By source length:", "", _scores_table(s["by_length"]), "",
                  "Error rates (share of sentences; 'stopped' = ended by EOS before the length limit):", "",
                  markdown_table([list(rates.values()) + [s["errors"]["length_ratio_mean"],
                                                          s["errors"]["length_ratio_median"]]],
                                 list(rates) + ["length ratio mean", "median"]), ""]
    if summary.get("unseen_words"):
        w = summary["unseen_words"]
        note = (f"{w['n']} held-out lexicon entries ({w['entries']} glosses), never seen in training: exact match "
                f"{w['exact_match']:.1%} (any gloss), chrF++ {w['chrf++']}. Only loanwords and names can be "
                "guessed; this is not part of the headline.")
        parts += ["## Diagnostic: unseen single words", "", note, "",
                  markdown_table([[e["src"], e["hyp"], " / ".join(e["refs"])] for e in w["examples"]],
                                 ["English", "output", "glosses"]), ""]
    head = summary["scores"]["greedy"]["by_domain"]["all"]
    parts += ["Signatures: " + "; ".join(f"`{head[k + '_signature']}`" for k in ("bleu", "chrf++", "ter")), "",
              "![scores by domain](scores_by_domain.png)", ""]
    worst = summary["scores"]["greedy"]["worst"]
    if worst:
        parts += ["## Worst sentences by domain (greedy, sentence chrF++)", ""]
        for domain, recs in worst.items():
            parts += [f"### {domain}", "", markdown_table([[r["chrf++"], r["src"], r["ref"], r["hyp"] or "(empty)"] for r in recs],
                                                          ["chrF++", "source", "reference", "hypothesis"]), ""]
    return "\n".join(parts)
