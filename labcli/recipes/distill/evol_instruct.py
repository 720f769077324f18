"""`lab distill evol-instruct`: Evol-Instruct (labcli.instruct.evol_instruct) with any teacher and judge
(labcli.instruct.teacher): rounds of evolution, elimination, responses, a 1-10 judge filter.

The report: pairs kept per round and per operation, eliminations by rule, the judge's score histogram.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from pydantic import Field

from labcli.config import RecipeConfig, read_user_text
from labcli.engine.trainer import TrainConfig
from labcli.errors import UserError
from labcli.runs import Run


class Config(RecipeConfig):
    teacher: str = Field("tiny-gpt2", description="A tiny-* preset (trained here on the seed tasks first), a hub id, "
                         "a local model folder, or an OpenAI-compatible endpoint http(s)://HOST/v1")
    teacher_model: str | None = Field(None, description="Model name at the teacher endpoint")
    teacher_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's API key")
    judge: str = Field("teacher", description="'teacher' (the same model), or a hub id, folder or endpoint URL")
    judge_model: str | None = Field(None, description="Model name at the judge endpoint")
    judge_threshold: int = Field(6, ge=1, le=10, description="Keep pairs the judge scores at least this (1-10)")
    pool: str | None = Field(None, description="Starting instructions: a .jsonl with an 'instruction' key per line "
                             "(e.g. a self-instruct run's instructions.jsonl); default: the 175 seed tasks")
    pool_size: int = Field(64, ge=1, description="Instructions drawn (seeded) from the pool")
    rounds: int = Field(3, ge=1, description="Evolution rounds (the paper: 4)")
    batch_size: int = Field(32, ge=1, description="Prompts per teacher call")
    max_tokens: int = Field(96, ge=8, description="Tokens per evolved instruction")
    response_tokens: int = Field(128, ge=8, description="Tokens per response")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature of evolution and responses (the paper: 1)")
    vocab_size: int = Field(2000, ge=100, description="Tokenizer size of a tiny-* teacher")
    teacher_corpus: int = Field(800, ge=10, description="Documents written from the seed tasks to train a tiny-* teacher")
    teacher_train: TrainConfig = TrainConfig(max_steps=300, batch_size=16, micro_batch_size=16, lr=3e-3, warmup_steps=20)


def read_pool(path: str | None) -> list[str]:
    from labcli.data import self_instruct

    if path is None:
        return [t["instruction"] for t in self_instruct.seed_tasks()]
    file = Path(path)
    if not file.is_file():
        raise UserError(f"pool file not found: {file}", "pass pool=FILE.jsonl with an 'instruction' key per line")
    out = []
    for n, line in enumerate(read_user_text(file).splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(str(json.loads(line)["instruction"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{file}: line {n} is not a JSON object with an 'instruction' key",
                            "one {\"instruction\": ...} object per line") from None
    if not out:
        raise UserError(f"{file} holds no instructions", "one {\"instruction\": ...} object per line")
    return out


def teacher_texts(seed_tasks: list[dict], n: int, rng: random.Random) -> list[str]:
    """A tiny teacher's corpus from the seed tasks, in the formats the pipeline prompts with. There are no
    real evolutions to learn from: an evolving prompt is followed by another seed instruction; the
    equality question by Equal (same instruction) or Not Equal; the judge prompt by Rating: 8 for a task's
    own answer and Rating: 2 for another task's answer (a relevance judge, nothing more)."""
    from labcli.instruct import evol_instruct as ev

    texts = []
    for i in range(n):
        a, b = rng.sample(seed_tasks, 2)
        answer = a["instances"][0]["output"]
        instruction = a["instruction"] + (f"\n{a['instances'][0]['input']}" if a["instances"][0]["input"].strip() else "")
        kind = i % 4
        if kind == 0:
            texts.append(ev.evolve_prompt(a["instruction"], rng.choice(ev.OPERATIONS)) + b["instruction"])
        elif kind == 1:
            texts.append(ev.response_prompt(instruction) + answer)
        elif kind == 2:
            same = rng.random() < 0.3
            texts.append(ev.equality_prompt(a["instruction"], a["instruction"] if same else b["instruction"])
                         + (" Equal" if same else " Not Equal"))
        else:
            own = rng.random() < 0.5
            texts.append(ev.judge_prompt(instruction, answer if own else b["instances"][0]["output"]) + (" 8" if own else " 2"))
    return texts


def make_model(spec: str, model_name: str | None, cfg: Config, ctx: Run, device, name: str):
    from labcli.data import self_instruct
    from labcli.instruct.teacher import load_teacher, warm_tiny_teacher

    if spec.startswith("tiny-"):
        texts = teacher_texts(self_instruct.seed_tasks(), cfg.teacher_corpus, random.Random(cfg.seed + 1))
        return warm_tiny_teacher(spec, texts, cfg.teacher_train, ctx.sub(name), seed=cfg.seed, device=device,
                                 vocab_size=cfg.vocab_size)
    model = load_teacher(spec, model_name, cfg.teacher_key_env, cfg.seed, device)
    return model, {"teacher": model.name}


def run(cfg: Config, ctx: Run) -> None:
    from labcli import runs
    from labcli.engine.distributed import pick_device
    from labcli.eval import plots
    from labcli.eval.tables import markdown_table, print_table
    from labcli.instruct import evol_instruct as ev

    device = pick_device(cfg.device)
    pool = read_pool(cfg.pool)
    pool = random.Random(cfg.seed).sample(pool, min(cfg.pool_size, len(pool)))
    teacher, note = make_model(cfg.teacher, cfg.teacher_model, cfg, ctx, device, "teacher")
    if cfg.judge == "teacher":
        judge, judge_note = teacher, {"judge": f"the teacher ({note['teacher']})"}
    else:
        judge, jn = make_model(cfg.judge, cfg.judge_model, cfg, ctx, device, "judge")
        judge_note = {"judge": jn["teacher"]}
    result = ev.evolve(teacher, pool, cfg.rounds, rng=random.Random(cfg.seed), batch_size=cfg.batch_size,
                       max_tokens=cfg.max_tokens, response_tokens=cfg.response_tokens, temperature=cfg.temperature)
    kept, scores = ev.judge(judge, result.pairs, cfg.judge_threshold, batch_size=cfg.batch_size)
    runs.write_text(ctx.path("evolved.jsonl"), "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in result.pairs))
    runs.write_text(ctx.path("data.jsonl"), "".join(json.dumps({"instruction": p["instruction"], "input": "",
                                                                "output": p["response"]}, ensure_ascii=False) + "\n"
                                                    for p in kept))
    attempts = cfg.rounds * len(pool)
    stages = ([{"stage": "evolutions tried", "pairs": attempts}]
              + [{"stage": f"eliminated: {k}", "pairs": v} for k, v in result.eliminated.items()]
              + [{"stage": "survived elimination", "pairs": len(result.pairs)},
                 {"stage": f"judge score >= {cfg.judge_threshold} (kept)", "pairs": len(kept)}])
    operations = [{"operation": op, "tried": c.get("tried", 0), "kept": c.get("kept", 0)} for op, c in result.by_operation.items()]
    summary = {**note, **judge_note, "seed": cfg.seed, "pool": len(pool), "rounds": cfg.rounds, "attempts": attempts,
               "survived": len(result.pairs), "kept": len(kept), "judge_threshold": cfg.judge_threshold,
               "eliminated": result.eliminated, "judge_scores": scores, "stages": stages, "operations": operations}
    ctx.write_summary(summary)
    plots.bars({k: {"pairs": v} for k, v in scores.items()}, ctx.path("judge_scores.png"), "judge scores (None: no rating)", "pairs")
    samples = "\n".join(f"- [{p['operation']}] {p['parent'][:80]} -> {p['instruction'][:120]} (score {p['score']})"
                        for p in result.pairs[:8])
    ctx.write_report(f"# lab distill evol-instruct\n\nTeacher `{note['teacher']}`, judge {judge_note['judge']}, seed "
                     f"{cfg.seed}: {len(pool)} instructions x {cfg.rounds} rounds.\n\n{markdown_table(stages)}\n\n"
                     f"{markdown_table(operations)}\n\n![judge scores](judge_scores.png)\n\nSamples:\n\n{samples}\n")
    print_table(stages, title=f"evol-instruct: {len(kept)} pairs kept of {attempts} evolutions ({cfg.rounds} rounds)")
