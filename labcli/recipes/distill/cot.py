"""`lab distill cot`: chain-of-thought distillation into a small student, through the engine.

Teacher traces come from the generator's exact program (`arith`, and SVAMP's equations), from the
data set's own rationales (`gold`), or from a teacher model by id (few-shot CoT, kept only when its
answer is right). The student is SFT'd on them with the prompt masked out of the loss. Three ways on
the same test set: a student SFT'd on direct answers; that same student with few-shot CoT prompting;
the distilled-CoT student.
"""

from __future__ import annotations

import random

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.engine.trainer import TrainConfig
from labcli.errors import UserError
from labcli.models.peft_prep import LoraSettings, Method
from labcli.reasoning.tasks import TASKS, ArithSettings, Example
from labcli.runs import Run

RESUMABLE = True  # --resume continues from the newest checkpoint


class Config(RecipeConfig):
    task: str = Field("arith", description=f"{', '.join(TASKS)}, or a .jsonl file of question/answer[/rationale] lines")
    student: str = Field("tiny-llama", description="tiny-llama (built here), a local model folder, or a hub id")
    teacher: str = Field("auto", description="program (arith, svamp), gold (the data set's rationales), a model id/folder, or auto")
    method: Method = Field("full", description="full, lora or qlora for the student")
    lora: LoraSettings = LoraSettings()
    arith: ArithSettings = ArithSettings()
    train_size: int | None = Field(None, ge=1, description="Training examples (default: all; arith: 4000 generated)")
    test_size: int = Field(200, ge=1, description="Test examples, the same for all three evaluations")
    direct_baseline: bool = Field(True, description="Also SFT a direct-answer student (rows 1 and 2 of the table)")
    shots: int = Field(3, ge=0, description="Worked examples in the CoT-prompting row")
    cot_fraction: float = Field(1.0, ge=0, le=1, description="Share of the distilled student's examples that show the CoT "
                                "trace; the rest show only the answer (< 1: a partly distilled student that reasons only "
                                "sometimes, a start with headroom for `lab distill grpo|dapo`)")
    max_len: int = Field(256, ge=16, description="Tokens per SFT example (prompt + target), left-truncated")
    max_new_tokens: int = Field(64, ge=1, description="Tokens generated at evaluation")
    eval_batch_size: int = Field(64, ge=1, description="Prompts per generation batch at evaluation")
    vocab_size: int = Field(600, ge=100, description="Tokenizer size for tiny-* students")
    teacher_max_new_tokens: int = Field(256, ge=1, description="Tokens a teacher model may write per trace")
    teacher_batch_size: int = Field(8, ge=1, description="Prompts per teacher generation batch")
    train: TrainConfig = TrainConfig(max_steps=400, batch_size=32, micro_batch_size=32, lr=3e-3, warmup_steps=30,
                                     save_every=200)


def resolve_teacher(cfg: Config) -> str:
    if cfg.teacher != "auto":
        if cfg.teacher == "program" and cfg.task not in ("arith", "svamp"):
            raise UserError(f"teacher=program needs a task with programs (arith, svamp), not '{cfg.task}'",
                            "use teacher=gold or a teacher model id")
        if cfg.teacher not in ("program", "gold") and ("/" in cfg.teacher or cfg.teacher.startswith(".")):
            from pathlib import Path

            if cfg.teacher.startswith((".", "/", "~")) and not Path(cfg.teacher).expanduser().exists():
                raise UserError(f"teacher model folder not found: {cfg.teacher}",
                                "pass teacher=program|gold, a save_pretrained folder, or a hub id with LAB_ONLINE=1")
        return cfg.teacher
    return "program" if cfg.task in ("arith", "svamp") else "gold"


def teacher_traces(cfg: Config, train_set: list[Example], device) -> tuple[list[tuple[Example, tuple]], dict]:
    """(example, steps) pairs to distill and a note on how they were made."""
    teacher = resolve_teacher(cfg)
    if teacher in ("program", "gold"):
        kept = [(ex, ex.rationale) for ex in train_set if ex.rationale]
        if not kept:
            raise UserError(f"task '{cfg.task}' has no gold rationales", "pass teacher=MODEL_ID to generate traces")
        return kept, {"teacher": teacher, "kept": len(kept), "of": len(train_set)}
    return model_traces(cfg, teacher, train_set, device)


def model_traces(cfg: Config, teacher: str, train_set: list[Example], device):
    """A teacher model writes CoT (few-shot); keep a trace only when its final answer is right."""
    from rich.progress import track

    from labcli.models import load_model
    from labcli.reasoning import lm, rewards

    loaded = load_model(teacher, "causal-lm")
    if loaded.tokenizer.pad_token_id is None:
        loaded.tokenizer.pad_token = loaded.tokenizer.eos_token
    model = loaded.model.to(device)
    shots = [ex for ex in train_set if ex.rationale][:cfg.shots]
    kept = []
    batches = range(0, len(train_set), cfg.teacher_batch_size)
    for lo in track(batches, description=f"teacher {teacher}"):
        chunk = train_set[lo:lo + cfg.teacher_batch_size]
        out = lm.generate(model, loaded.tokenizer, [rewards.few_shot_prompt(ex, shots) for ex in chunk],
                          max_new_tokens=cfg.teacher_max_new_tokens)
        for ex, text in zip(chunk, out.texts):
            text = text.split("\n\n")[0].strip()
            if rewards.correctness_reward(text, ex) == 1.0:
                steps = text[:text.rfind("The answer is")].strip()
                kept.append((ex, (steps,) if steps else ()))
    if not kept:
        raise UserError(f"teacher '{teacher}' got no training answer right", "use a stronger teacher or teacher=gold")
    del model
    return kept, {"teacher": teacher, "kept": len(kept), "of": len(train_set)}


def distill_pairs(traces: list[tuple[Example, tuple]], cot_fraction: float, seed: int) -> list[tuple[str, str]]:
    """(prompt, target) pairs of the distilled student: a seeded `cot_fraction` of them show the trace,
    the rest only the answer line."""
    from labcli.reasoning import rewards

    with_cot = set(random.Random(seed + 7).sample(range(len(traces)), round(cot_fraction * len(traces))))
    return [(rewards.prompt(ex), rewards.target(ex, i in with_cot, steps)) for i, (ex, steps) in enumerate(traces)]


def load_examples(cfg: Config):
    from labcli.reasoning.tasks import load_task

    steps, digits = cfg.arith.steps, cfg.arith.digits
    train_set = load_task(cfg.task, "train", seed=cfg.seed, n=cfg.train_size, steps=steps, digits=digits)
    test_set = load_task(cfg.task, "test", seed=cfg.seed, n=cfg.test_size, steps=steps, digits=digits)
    if not train_set or not test_set:
        raise UserError(f"task '{cfg.task}' has an empty train or test split", "give more examples")
    return train_set, test_set[:cfg.test_size]


def sft_student(cfg: Config, ctx: Run, texts: list[str], pairs: list[tuple[str, str]], device):
    """Build the student and SFT it on (prompt, target) pairs with the engine; returns (result, tokenizer, params)."""
    from labcli.data.text import padded_collate
    from labcli.engine.trainer import train
    from labcli.models import load_model, prepare_for_method
    from labcli.reasoning import lm

    loaded = load_model(cfg.student, "causal-lm", quantize_4bit=cfg.method == "qlora", tokenizer_texts=lambda: texts,
                        vocab_size=cfg.vocab_size, seed=cfg.seed)
    tok = loaded.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model, params = prepare_for_method(loaded.model, cfg.method, cfg.lora, "causal-lm", seed=cfg.seed)
    data = [lm.sft_example(tok, p, t, cfg.max_len) for p, t in pairs]
    n_eval = max(1, len(data) // 20)
    result = train(model, data[n_eval:], padded_collate(tok.pad_token_id), cfg.train, ctx, seed=cfg.seed,
                   device=device, eval_set=data[:n_eval])
    return result, tok, params


def run(cfg: Config, ctx: Run) -> None:
    from labcli.engine.distributed import pick_device
    from labcli.engine.export import save_final_model
    from labcli.eval import plots
    from labcli.eval.tables import markdown_table, print_table
    from labcli.reasoning import lm, rewards
    from labcli.runs import latest_checkpoint

    device = pick_device(cfg.device)
    train_set, test_set = load_examples(cfg)
    traces, teacher_note = teacher_traces(cfg, train_set, device)
    cot_pairs = distill_pairs(traces, cfg.cot_fraction, cfg.seed)
    direct_pairs = [(rewards.prompt(ex), rewards.target(ex, False)) for ex in train_set]
    texts = [p + t for p, t in cot_pairs + direct_pairs]

    cot_result, tok, params = sft_student(cfg, ctx, texts, cot_pairs, device)
    save_final_model(cot_result.model, tok, cfg.method, ctx.path("model"), ctx.path("adapter"))
    rows = {}
    prompts = [rewards.prompt(ex) for ex in test_set]
    if cfg.direct_baseline:
        sub = ctx.sub("direct", recipe=ctx.recipe + "-direct",
                      resume_from=latest_checkpoint(ctx.dir / "direct") if ctx.resume_from else None)
        direct_result, _, _ = sft_student(cfg, sub, texts, direct_pairs, device)
        save_final_model(direct_result.model, tok, cfg.method, sub.path("model"), sub.path("adapter"))
        shots = random.Random(cfg.seed).sample([ex for ex, _ in traces], min(cfg.shots, len(traces)))
        rows["direct answer"] = lm.accuracy(direct_result.model, tok, test_set, prompts, max_new_tokens=cfg.max_new_tokens,
                                            batch_size=cfg.eval_batch_size)
        few = [rewards.few_shot_prompt(ex, shots) for ex in test_set]
        rows[f"CoT prompting ({cfg.shots}-shot, direct student)"] = lm.accuracy(
            direct_result.model, tok, test_set, few, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.eval_batch_size)
    rows["distilled CoT"] = lm.accuracy(cot_result.model, tok, test_set, prompts, max_new_tokens=cfg.max_new_tokens,
                                        batch_size=cfg.eval_batch_size)

    summary = {"task": cfg.task, "student": cfg.student, "method": cfg.method, **teacher_note, "cot_fraction": cfg.cot_fraction, **params,
               "train_examples": len(train_set), "test_examples": len(test_set), "seed": cfg.seed,
               "steps": cot_result.steps, "final_loss": cot_result.final_loss, "eval_loss": cot_result.eval_loss,
               "wall_s": round(cot_result.wall_s, 1),
               "results": {k: {m: v for m, v in r.items() if m != "samples"} for k, r in rows.items()}}
    ctx.write_summary(summary)
    plots.curves(ctx.metrics(), ["loss", "eval_loss"], ctx.path("loss.png"), f"CoT SFT of {cfg.student} on {cfg.task}")
    plots.bars({k.split(" (")[0]: {"accuracy": r["accuracy"]} for k, r in rows.items()}, ctx.path("accuracy.png"),
               f"{cfg.task}: {len(test_set)} test problems", "accuracy")
    table = [{"method": k, "accuracy": r["accuracy"], "format ok": r["format_rate"], "mean tokens": r["mean_length"]}
             for k, r in rows.items()]
    samples = "\n".join(f"- `{s['completion'][:160]}` (gold {s['gold']})" for s in rows["distilled CoT"]["samples"])
    ctx.write_report(
        f"# lab distill cot: {cfg.task}\n\nStudent `{cfg.student}` ({cfg.method}, {params['trainable_params']:,} trainable "
        f"parameters), teacher `{teacher_note['teacher']}` ({teacher_note['kept']} of {teacher_note['of']} traces kept), "
        f"{cot_result.steps} SFT steps, seed {cfg.seed}. Same {len(test_set)} test problems, greedy decoding.\n\n"
        f"{markdown_table(table)}\n![accuracy](accuracy.png)\n\n![loss](loss.png)\n\nDistilled-CoT samples:\n\n{samples}\n")
    print_table(table, title=f"lab distill cot: {cfg.task}, {len(test_set)} test problems (greedy)")
