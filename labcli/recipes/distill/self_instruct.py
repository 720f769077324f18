"""`lab distill self-instruct`: the Self-Instruct bootstrap (labcli.instruct.self_instruct) with any
teacher (labcli.instruct.teacher): instructions, classification or not, instances, Alpaca-format data.

The report is the pipeline's statistics: rounds and requests, candidates kept and rejected by which
rule, the ROUGE-L distribution of candidates against the pool, and verb-noun diversity.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.engine.trainer import TrainConfig
from labcli.errors import UserError
from labcli.runs import Run


class Config(RecipeConfig):
    teacher: str = Field("tiny-gpt2", description="A tiny-* preset (trained here on the seed tasks first), a hub id, "
                         "a local model folder, or an OpenAI-compatible endpoint http(s)://HOST/v1")
    teacher_model: str | None = Field(None, description="Model name at the endpoint (with teacher=http...)")
    teacher_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's API key")
    num_instructions: int = Field(500, ge=1, description="Instructions to keep after filtering")
    request_batch_size: int = Field(16, ge=1, description="Prompts per teacher call (the reference: 5)")
    num_prompt_instructions: int = Field(8, ge=3, description="Instructions shown per prompt (up to 2 generated)")
    classification_seeds_only: bool = Field(False, description="Prompt with classification seeds only (more "
                                            "classification tasks), as the reference's --use_clf_seed_tasks_only")
    max_tokens: int = Field(256, ge=16, description="Tokens per instruction-generation reply (the reference: 1024)")
    max_rounds: int = Field(200, ge=1, description="Give up after this many batches of requests")
    max_instances: int = Field(5, ge=1, description="Instances kept per instruction")
    instance_max_tokens: int = Field(300, ge=16, description="Tokens per instance-generation reply (the reference: 300)")
    vocab_size: int = Field(2000, ge=100, description="Tokenizer size of a tiny-* teacher")
    teacher_corpus: int = Field(800, ge=10, description="Documents written from the seed tasks to train a tiny-* teacher")
    teacher_train: TrainConfig = TrainConfig(max_steps=300, batch_size=16, micro_batch_size=16, lr=3e-3, warmup_steps=20)


def check(cfg: Config) -> list[str]:
    if cfg.teacher.startswith(("http://", "https://")) and not cfg.teacher_model:
        return ["an endpoint teacher needs teacher_model (hint: add --teacher-model NAME, the name the server serves)"]
    return []


def teacher_texts(seed_tasks: list[dict], n: int, rng: random.Random) -> list[str]:
    """What a tiny teacher learns from: the seed tasks in the three formats the pipeline prompts with."""
    from labcli.instruct import self_instruct as si

    seeds = [t["instruction"] for t in seed_tasks]
    texts = []
    for i in range(n):
        kind = i % 4
        if kind < 2:  # numbered lists (half the corpus), as the bootstrap prompt shows them; the model ends them with EOS
            shown = rng.sample(seeds, rng.randint(9, 15))
            texts.append(si.encode_prompt(shown).rsplit("\n", 1)[0] + "\n")
        elif kind == 2:
            target = rng.choice(seed_tasks)
            shots = si.clf_shots([t for t in seed_tasks if t is not target], rng, 6)
            texts.append(si.clf_prompt(target["instruction"], shots) + (" Yes" if target["is_classification"] else " No"))
        else:
            target = rng.choice(seed_tasks)
            clf = target["is_classification"]
            shots = si.instance_shots([t for t in seed_tasks if t is not target], clf, rng, 2)
            prompt = si.instance_prompt(target["instruction"], clf, shots)
            texts.append(prompt + _instances_text(target, clf)[len(si.instance_primer(clf)):])
    return texts


def _instances_text(task: dict, clf: bool) -> str:
    out = ""
    for k, inst in enumerate(task["instances"]):
        if clf:
            out += f"Class label: {inst['output'].strip()}\n{inst['input'].strip()}\n"
        else:
            out += f"Example {k + 1}\n" + (f"Input: {inst['input'].strip()}\n" if inst["input"].strip() else "")
            out += f"Output: {inst['output'].strip()}\n"
    return out


def make_teacher(cfg: Config, ctx: Run, seed_tasks: list[dict], device):
    from labcli.instruct.teacher import load_teacher, warm_tiny_teacher

    if cfg.teacher.startswith("tiny-"):
        texts = teacher_texts(seed_tasks, cfg.teacher_corpus, random.Random(cfg.seed + 1))
        return warm_tiny_teacher(cfg.teacher, texts, cfg.teacher_train, ctx.sub("teacher"), seed=cfg.seed,
                                 device=device, vocab_size=cfg.vocab_size)
    teacher = load_teacher(cfg.teacher, cfg.teacher_model, cfg.teacher_key_env, cfg.seed, device)
    return teacher, {"teacher": teacher.name}


def classify(teacher, instructions: list[str], seed_tasks: list[dict], rng: random.Random, batch: int) -> list[tuple[bool, str]]:
    """(is classification, the teacher's raw reply) per instruction."""
    from labcli.instruct import self_instruct as si

    shots = si.clf_shots(seed_tasks, rng)
    out = []
    for lo in range(0, len(instructions), batch):
        prompts = [si.clf_prompt(i, shots) for i in instructions[lo:lo + batch]]
        replies = teacher.complete(prompts, max_tokens=3, temperature=0.0, top_p=1.0, stop=["\n"])
        out += [(si.parse_is_classification(r.text), r.text) for r in replies]
    return out


def instances(cfg: Config, teacher, tasks: list[dict], seed_tasks: list[dict], rng: random.Random) -> Counter:
    """Fill task["instances"] (the reference's parse + filters, at most max_instances); returns counts."""
    from labcli.instruct import self_instruct as si

    shots = {c: si.instance_shots(seed_tasks, c, rng) for c in (True, False)}
    counts: Counter = Counter()
    b = cfg.request_batch_size
    for lo in range(0, len(tasks), b):
        chunk = tasks[lo:lo + b]
        prompts = [si.instance_prompt(t["instruction"], t["is_classification"], shots[t["is_classification"]]) for t in chunk]
        replies = teacher.complete(prompts, max_tokens=cfg.instance_max_tokens, temperature=0.0, top_p=1.0,
                                   stop=[f"Example {cfg.max_instances + 1}", "Task:"], presence_penalty=1.5)  # the reference's settings
        for t, r in zip(chunk, replies):
            parse = si.parse_classification_instances if t["is_classification"] else si.parse_generation_instances
            found = parse(si.instance_primer(t["is_classification"]) + r.text, t["instruction"], r.finish_reason)
            kept = rng.sample(found, min(len(found), cfg.max_instances))
            t["instances"] = [{"input": i, "output": o} for _, i, o in kept]
            t["raw_instances"] = r.text
            counts["instances"] += len(kept)
            counts["tasks with no valid instance"] += not kept
    return counts


def rouge_histogram(scores: list[float]) -> dict[str, int]:
    bins = Counter(min(int(s * 10), 9) for s in scores)
    return {f"{b / 10:.1f}-{(b + 1) / 10:.1f}": bins.get(b, 0) for b in range(10)}


def diversity(instructions: list[str]) -> dict:
    from labcli.instruct.self_instruct import verb_noun

    pairs = Counter(verb_noun(i) for i in instructions)
    verbs = Counter(v for v, _ in pairs.elements())
    return {"distinct_first_words": len(verbs), "distinct_verb_noun_pairs": len(pairs),
            "top_first_words": dict(verbs.most_common(10)),
            "top_pairs": {f"{v} {n}": c for (v, n), c in pairs.most_common(10)}}


def run(cfg: Config, ctx: Run) -> None:
    from labcli import runs
    from labcli.data import self_instruct as data
    from labcli.engine.distributed import pick_device
    from labcli.eval import plots
    from labcli.eval.tables import markdown_table, print_table
    from labcli.instruct import self_instruct as si

    device = pick_device(cfg.device)
    seed_tasks = data.seed_tasks()
    pool = [t for t in seed_tasks if t["is_classification"]] if cfg.classification_seeds_only else seed_tasks
    if cfg.num_prompt_instructions - 2 > len(pool):
        raise UserError(f"num_prompt_instructions={cfg.num_prompt_instructions} needs more seeds than the {len(pool)} there are",
                        "lower num_prompt_instructions")
    clock = time.perf_counter()
    teacher, teacher_note = make_teacher(cfg, ctx, seed_tasks, device)
    times = {"teacher_s": round(time.perf_counter() - clock, 1)}
    clock = time.perf_counter()
    rng = random.Random(cfg.seed)
    result = si.bootstrap(teacher, [t["instruction"] for t in pool], cfg.num_instructions, rng=rng,
                          batch_size=cfg.request_batch_size, num_prompt_instructions=cfg.num_prompt_instructions,
                          classification=cfg.classification_seeds_only, max_tokens=cfg.max_tokens,
                          max_rounds=cfg.max_rounds,
                          on_round=lambda r: ctx.log(step=r.rounds, kept=len(r.instructions), candidates=r.candidates))
    times["bootstrap_s"] = round(time.perf_counter() - clock, 1)
    if not result.instructions:
        raise UserError(f"teacher '{teacher.name}' produced no instruction that passed the filters in {result.rounds} rounds",
                        "use a stronger teacher, or raise max_rounds / max_tokens")
    tasks = result.instructions
    clock = time.perf_counter()
    for t, (clf, raw) in zip(tasks, classify(teacher, [t["instruction"] for t in tasks], seed_tasks, rng, cfg.request_batch_size)):
        t["is_classification"], t["raw_is_classification"] = clf, raw
    counts = instances(cfg, teacher, tasks, seed_tasks, rng)
    times["instances_s"] = round(time.perf_counter() - clock, 1)
    rows = [{"instruction": t["instruction"], "input": i["input"], "output": i["output"]} for t in tasks for i in t["instances"]]
    runs.write_text(ctx.path("instructions.jsonl"), "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tasks))
    runs.write_text(ctx.path("data.jsonl"), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    rouge = result.candidate_rouge
    rejected = dict(result.rejected.most_common())
    summary = {**teacher_note, "seed": cfg.seed, "rounds": result.rounds, "requests": result.requests,
               "candidates": result.candidates, "kept_instructions": len(tasks), "target": cfg.num_instructions,
               "rejected": rejected, "classification_tasks": sum(t["is_classification"] for t in tasks),
               "instances": counts["instances"], "tasks_without_instances": counts["tasks with no valid instance"],
               "alpaca_rows": len(rows), "exact_lcs_calls": result.exact_lcs_calls,
               "rouge_l_of_candidates": rouge_histogram(rouge),
               "rouge_l_of_kept_mean": round(sum(t["rouge_l"] for t in tasks) / len(tasks), 4),
               "diversity": diversity([t["instruction"] for t in tasks]), "wall": times}
    filter_rows = [{"rule": "kept", "instructions": len(tasks)}] + [{"rule": k, "instructions": v} for k, v in rejected.items()]
    summary["filters"] = filter_rows
    summary["rouge_rows"] = [{"rouge_l": k, "candidates": v} for k, v in summary["rouge_l_of_candidates"].items()]
    ctx.write_summary(summary)
    plots.bars({k: {"candidates": v} for k, v in summary["rouge_l_of_candidates"].items()}, ctx.path("rouge_l.png"),
               "max ROUGE-L of each candidate against seeds + kept instructions", "candidates")
    samples = "\n".join(f"- {t['instruction'][:160]} (ROUGE-L {t['rouge_l']:.2f}, "
                        f"{'classification' if t['is_classification'] else 'generation'}, {len(t['instances'])} instances)"
                        for t in tasks[:8])
    ctx.write_report(
        f"# lab distill self-instruct\n\nTeacher `{teacher_note['teacher']}`, seed {cfg.seed}: {result.rounds} rounds, "
        f"{result.requests} requests, {result.candidates} candidate instructions, {len(tasks)} kept "
        f"(target {cfg.num_instructions}); {summary['classification_tasks']} judged classification; "
        f"{counts['instances']} instances, {len(rows)} Alpaca rows in data.jsonl.\n\n{markdown_table(filter_rows)}\n"
        f"![ROUGE-L](rouge_l.png)\n\nVerb-noun diversity (first word + first content word; no parser): "
        f"{summary['diversity']['distinct_first_words']} distinct first words, "
        f"{summary['diversity']['distinct_verb_noun_pairs']} distinct pairs.\n\nFirst kept instructions:\n\n{samples}\n")
    print_table(filter_rows, title=f"self-instruct: {len(tasks)} instructions kept of {result.candidates} candidates "
                                   f"({result.rounds} rounds), {len(rows)} Alpaca rows")
