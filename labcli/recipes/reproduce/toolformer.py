"""`lab reproduce toolformer`: Toolformer (Schick et al. 2023) at CPU scale, on arithmetic word problems.

1. A small character-level GPT-2 (M) is trained on generated word problems with worked solutions
   ("37 + 48 = 85. Answer: 85.", operands of `digits` digits); a share of them carries one call drawn
   by the candidate sampler at a random number, useful or not, so that M has seen the call syntax
   (GPT-J, the paper's M, had seen code and calculator transcripts; a model trained from scratch on
   plain problems treats any call as noise, which the first trials here showed).
2. Candidate `[Calculator(x op y) -> r]` calls are sampled at the numbers of the solutions, plus
   planted useless calls on random operands; each is executed and kept when the weighted loss of the
   following tokens (w_t ∝ max(0, 1 - 0.2 t), call prepended) drops by τ against the smaller of "no
   call" and "call without result" (labcli/reasoning/tools.py, labcli/reasoning/toolformer.py). The
   filter is run with the call written at its position (`placement: inline`, where finetuning and
   decoding put it) and prepended to the text (the paper's eq. 1); both are reported.
3. M is finetuned on the texts with the kept calls written in (Toolformer), and, for the baseline,
   on the same texts without calls for the same steps.
4. Held-out problems with larger operands: exact match of Toolformer decoding with the calculator
   (a call is executed when the model writes its arrow), of the same model with the tool disabled,
   and of the baseline.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.engine.trainer import TrainConfig
from labcli.runs import Run

PAPER = "Toolformer: Language Models Can Teach Themselves to Use Tools (Schick et al. 2023)"


class ModelSettings(Section):
    layers: int = Field(2, ge=1, description="Transformer blocks of the character-level GPT-2")
    width: int = Field(64, ge=8, description="Hidden size")
    heads: int = Field(4, ge=1, description="Attention heads")


class Config(RecipeConfig):
    model: ModelSettings = ModelSettings()
    train_problems: int = Field(3000, ge=10, description="Generated word problems M is trained on")
    digits: int = Field(1, ge=1, le=3, description="Digits of the operands in training")
    min_steps: int = Field(1, ge=1, le=4, description="Fewest operations per problem")
    max_steps: int = Field(2, ge=1, le=4, description="Most operations per problem")
    pretrain_call_share: float = Field(0.5, ge=0, le=1, description="Share of M's training texts with one sampled call "
                                       "written in at a random number (useful or not): the call syntax M has seen")
    pretrain: TrainConfig = TrainConfig(max_steps=400, batch_size=16, micro_batch_size=16, lr=3e-3, warmup_steps=40)
    annotate_texts: int = Field(150, ge=1, description="Training texts annotated with candidate calls (the finetuning set)")
    ops_per_position: int = Field(2, ge=1, le=4, description="Sampled operators per candidate position (of + - * /)")
    planted_per_text: int = Field(1, ge=0, description="Planted useless calls (random operands) per annotated text")
    placement: Literal["inline", "prefix"] = Field("inline", description="Where the filter writes a call: at its position "
                                                   "(inline) or before the text (prefix, the paper's eq. 1); both are reported")
    tau: float = Field(1.0, description="Filter threshold τ on L- - L+ (the paper's τ_f = 1.0)")
    decay: float = Field(0.2, gt=0, description="Weights w_t ∝ max(0, 1 - decay·t) of the tokens after a call")
    finetune: TrainConfig = TrainConfig(max_steps=150, batch_size=16, micro_batch_size=16, lr=1e-3, warmup_steps=15)
    test_problems: int = Field(100, ge=1, description="Held-out problems per test set")
    test_digits: int = Field(2, ge=1, le=4, description="Digits of the operands of the held-out larger-operand set")
    max_new_tokens: int = Field(100, ge=8, description="Tokens decoded per test problem (characters)")
    precision_bar: float = Field(0.9, description="The issue's bar for the precision of the kept calls")
    ratio_bar: float = Field(3.0, description="The issue's bar for exact match with tools / without")


def check(cfg: Config) -> list[str]:
    problems = []
    if cfg.min_steps > cfg.max_steps:
        problems.append(f"min_steps={cfg.min_steps} is above max_steps={cfg.max_steps} (hint: set min_steps <= max_steps)")
    if cfg.model.width % cfg.model.heads:
        problems.append(f"model.width={cfg.model.width} is not a multiple of model.heads={cfg.model.heads} "
                        "(hint: change one of them)")
    if cfg.annotate_texts > cfg.train_problems:
        problems.append(f"annotate_texts={cfg.annotate_texts} is more than train_problems={cfg.train_problems} "
                        "(hint: lower annotate_texts)")
    if cfg.test_digits <= cfg.digits:
        problems.append(f"test_digits={cfg.test_digits} must be above digits={cfg.digits}: the claim is about larger "
                        "operands than in training (hint: raise test_digits)")
    return problems


def plan(cfg: Config) -> str:
    return (f"train a {cfg.model.layers}x{cfg.model.width} character GPT-2 on {cfg.train_problems} problems "
            f"({cfg.digits}-digit operands, {cfg.pretrain.max_steps} steps); annotate {cfg.annotate_texts} texts with "
            f"sampled + planted calls, filter at τ={cfg.tau}; finetune {cfg.finetune.max_steps} steps with and without "
            f"calls; test on {cfg.test_problems} problems with {cfg.digits} and {cfg.test_digits}-digit operands")


def build_model(cfg: Config, tokenizer):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(cfg.seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=cfg.model.width,
                                      n_layer=cfg.model.layers, n_head=cfg.model.heads, pad_token_id=tokenizer.pad_token_id,
                                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))


def examples(tokenizer, pairs: list[tuple[str, str]]) -> list[dict]:
    from labcli.reasoning.lm import sft_example

    return [sft_example(tokenizer, tokenizer.bos_token + prompt, solution, 512) for prompt, solution in pairs]


def evaluate(model, tokenizer, problems, tools, cfg: Config, batch: int = 100) -> dict:
    from labcli.reasoning.toolformer import exact_match, problem_text
    from labcli.reasoning.tools import find_calls, generate_with_tools_batch

    correct = called = calls_right = calls_total = 0
    samples = []
    for lo in range(0, len(problems), batch):
        chunk = problems[lo:lo + batch]
        prompts = [tokenizer.bos_token + problem_text(p)[0] for p in chunk]
        texts, counts = generate_with_tools_batch(model, tokenizer, prompts, tools, max_new_tokens=cfg.max_new_tokens)
        for p, text, n in zip(chunk, texts, counts):
            correct += exact_match(text, p.answer)
            called += n > 0
            written = find_calls(text)
            calls_total += len(written)
            # a call is right when its expression is one of the problem's steps
            steps = {s.split(" = ")[0] for s in p.steps}
            calls_right += sum(c.arg.strip() in steps for c in written)
            if len(samples) < 3:
                samples.append({"question": p.question, "answer": p.answer, "completion": text})
    n = len(problems)
    return {"exact_match": correct / n, "correct": correct, "n": n, "rows_with_executed_call": called / n,
            "calls_written": calls_total, "calls_with_a_step_expression": calls_right, "samples": samples}


def run(cfg: Config, ctx: Run) -> None:
    import copy
    import random
    import time

    from labcli import runs
    from labcli.data.text import padded_collate
    from labcli.engine.distributed import pick_device
    from labcli.engine.trainer import train
    from labcli.errors import UserError
    from labcli.models.tokenizer import char_tokenizer
    from labcli.reasoning import arith
    from labcli.reasoning import toolformer as tf
    from labcli.reasoning.tools import format_call, registry

    if problems := check(cfg):
        raise UserError(problems[0])
    runs.seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    steps = (cfg.min_steps, cfg.max_steps)
    train_problems = arith.generate(cfg.train_problems, cfg.seed * 3, steps, cfg.digits)
    seen = {p.question for p in train_problems}
    test_in = [p for p in arith.generate(cfg.test_problems * 2, cfg.seed * 3 + 1, steps, cfg.digits)
               if p.question not in seen][:cfg.test_problems]
    test_large = arith.generate(cfg.test_problems, cfg.seed * 3 + 2, steps, cfg.test_digits)
    pairs = [tf.problem_text(p) for p in train_problems]
    rng = random.Random(cfg.seed)
    corpus = [(q, tf.with_random_calls(q, s, rng) if rng.random() < cfg.pretrain_call_share else s) for q, s in pairs]
    alphabet = [q + s for q, s in pairs] + [tf.problem_text(p)[0] for p in test_large] + [format_call("Calculator", "0 -+*/ 9", "0.5")]
    tokenizer = char_tokenizer(alphabet)
    collate = padded_collate(tokenizer.pad_token_id)
    timings = {}

    start = time.perf_counter()
    base = build_model(cfg, tokenizer)
    print(f"1/4 training M ({sum(p.numel() for p in base.parameters()):,} parameters) on {len(pairs)} problems", flush=True)
    dev = examples(tokenizer, corpus[:100])
    base = train(base, examples(tokenizer, corpus[100:]), collate, cfg.pretrain, ctx.sub("pretrain"), seed=cfg.seed,
                 device=device, eval_set=dev, progress=False).model.eval()
    timings["pretrain_s"] = time.perf_counter() - start

    start = time.perf_counter()
    annotated = pairs[100:100 + cfg.annotate_texts]
    texts = [q + s for q, s in annotated]
    candidates = [c for i, (q, s) in enumerate(annotated)
                  for c in tf.sample_candidates(q, s, i, rng, cfg.ops_per_position, cfg.planted_per_text)]
    print(f"2/4 scoring {len(candidates)} candidate calls in {len(texts)} texts (τ={cfg.tau})", flush=True)
    stats = {}
    for placement in ("inline", "prefix"):
        scored = tf.annotate(base, tokenizer, texts, candidates, cfg.decay, inline=placement == "inline")
        stats[placement] = {"placement": placement, **tf.filter_stats(scored, tf.keep(scored, cfg.tau))}
        if placement == cfg.placement:
            kept = tf.keep(scored, cfg.tau)
    stats = {"used": cfg.placement, **stats}
    timings["annotate_s"] = time.perf_counter() - start
    by_text: dict[int, list] = {}
    for s in kept:
        by_text.setdefault(s.candidate.text, []).append(s.candidate)
    augmented = [(q, tf.with_calls(q + s, by_text.get(i, []))[len(q):]) for i, (q, s) in enumerate(annotated)]
    stats[cfg.placement]["texts_with_calls"] = len(by_text)

    start = time.perf_counter()
    print(f"3/4 finetuning on {len(kept)} kept calls in {len(by_text)} texts, and the baseline without calls", flush=True)
    toolformer = train(copy.deepcopy(base), examples(tokenizer, augmented), collate, cfg.finetune, ctx.sub("finetune-calls"),
                       seed=cfg.seed, device=device, eval_set=dev, progress=False).model.eval()
    plain = train(copy.deepcopy(base), examples(tokenizer, annotated), collate, cfg.finetune, ctx.sub("finetune-plain"),
                  seed=cfg.seed, device=device, eval_set=dev, progress=False).model.eval()
    timings["finetune_s"] = time.perf_counter() - start

    start = time.perf_counter()
    print("4/4 decoding the held-out problems", flush=True)
    tools = registry()
    rows = []
    for name, test in ((f"{cfg.digits}-digit (as trained)", test_in), (f"{cfg.test_digits}-digit (larger)", test_large)):
        for model_name, model, use in (("Toolformer + calculator", toolformer, tools), ("Toolformer, tool disabled", toolformer, None),
                                       ("M finetuned without calls", plain, None)):
            result = evaluate(model, tokenizer, test, use, cfg)
            rows.append({"test": name, "model": model_name, **result})
    timings["decode_s"] = time.perf_counter() - start
    if ctx.is_main:
        write_results(cfg, ctx, stats, rows, timings, device, augmented)


def ratio(a: float, b: float) -> float | None:
    """a / b; None when both are zero, infinity when only b is."""
    if b == 0:
        return None if a == 0 else float("inf")
    return a / b


def claims_for(cfg: Config, stats: dict, rows: list[dict]):
    from labcli.eval.claims import Claim, all_of, verdict

    by = {(r["test"].split()[0], r["model"]): r for r in rows}
    large = f"{cfg.test_digits}-digit"
    tool = by[(large, "Toolformer + calculator")]
    off, plain = by[(large, "Toolformer, tool disabled")], by[(large, "M finetuned without calls")]
    r_off, r_plain = ratio(tool["exact_match"], off["exact_match"]), ratio(tool["exact_match"], plain["exact_match"])
    size = f"{cfg.model.layers}x{cfg.model.width} character GPT-2, seed {cfg.seed}"

    def fmt(r):
        return "n/a" if r is None else ("inf" if r == float("inf") else f"{r:.1f}x")

    other = stats["prefix" if stats["used"] == "inline" else "inline"]
    stats = stats[stats["used"]]
    precision = stats["precision"]
    return [
        Claim("the loss-based filter keeps useful calls (planted useless calls are dropped)",
              "section 2: calls kept when L- - L+ >= τ_f; the issue's bar: precision >= 0.9 with planted useless calls",
              f"{stats['candidates']} candidates in {cfg.annotate_texts} texts ({stats['useful_candidates']} useful, "
              f"{stats['planted_useless']} planted useless), calls {stats['placement']}, τ={cfg.tau}, weights max(0, 1 - {cfg.decay}t); {size}",
              f"kept {stats['kept']}: precision {precision if precision is None else round(precision, 3)}, recall "
              f"{stats['recall'] if stats['recall'] is None else round(stats['recall'], 3)}; planted kept "
              f"{stats['planted_kept']}/{stats['planted_useless']} ({stats['placement']}; {other['placement']}: kept "
              f"{other['kept']}, precision {other['precision'] if other['precision'] is None else round(other['precision'], 3)})",
              verdict(precision, cfg.precision_bar - 1e-9, partly=0.5) if stats["kept"] else "does not hold"),
        Claim(f"tool use beats the same model without tools on larger operands (>= {cfg.ratio_bar:g}x exact match)",
              "Table 4: ASDiv / SVAMP / MAWPS 40.4 / 29.4 / 44.0 with the calculator vs 14.8 / 6.3 / 15.0 with "
              "it disabled (GPT-J 7.5 / 5.2 / 9.9)",
              f"{tool['n']} held-out problems with {cfg.test_digits}-digit operands (trained on {cfg.digits}); "
              "greedy decoding", f"{tool['exact_match']:.3f} with the calculator vs {off['exact_match']:.3f} tool disabled "
              f"({fmt(r_off)}) and {plain['exact_match']:.3f} finetuned without calls ({fmt(r_plain)})",
              all_of(*(verdict(r, cfg.ratio_bar - 1e-9, partly=1.0) for r in (r_off, r_plain)))
              if tool["exact_match"] > 0 else "does not hold"),
        Claim("decoding calls the tool at inference", "section 3: the model decides when and how to call; "
              "Toolformer uses the calculator on 97.9 % of math examples",
              f"the same {tool['n']} larger-operand problems; a call runs when the model writes its arrow",
              f"{tool['rows_with_executed_call']:.3f} of problems run a call; {tool['calls_with_a_step_expression']}/"
              f"{tool['calls_written']} calls compute one of the problem's steps",
              verdict(tool["rows_with_executed_call"], 0.9 - 1e-9, partly=0.0)),
    ]


def scale_gap(cfg: Config) -> str:
    return (f"The paper annotates CCNet with GPT-J (6.7B) prompted few-shot to write calls, keeps positions where "
            f"p('[') > 0.05, and finetunes on millions of texts; here a {cfg.model.layers}x{cfg.model.width} "
            f"character-level GPT-2 trained from scratch on {cfg.train_problems} generated word problems. A model this "
            "small cannot be prompted to write calls, so candidates are proposed by a sampler instead of by the LM "
            f"(at each number of a solution: the two numbers written just before it, {cfg.ops_per_position} random "
            "operators of four); the filter, the finetuning and the decoding are the paper's. The filter never sees "
            "which calls are useful; usefulness (the call's result is the number it precedes) is only used to score "
            "precision. One seed, greedy decoding, the issue's bars.")


def write_results(cfg: Config, ctx: Run, stats: dict, rows: list[dict], timings: dict, device, augmented) -> None:
    from labcli.eval import claims as claims_table
    from labcli.eval.measure import hardware_line
    from labcli.eval.tables import markdown_table

    claims = claims_for(cfg, stats, rows)
    hardware = hardware_line(device)
    table = [{k: r[k] for k in ("test", "model", "exact_match", "correct", "n", "rows_with_executed_call", "calls_written",
                                "calls_with_a_step_expression")} for r in rows]
    examples_with_calls = [q + s for q, s in augmented if "[Calculator" in s][:3]
    ctx.write_summary({"paper": PAPER, "claims": claims_table.rows(claims), "filter": stats, "results": table,
                       "timings_s": {k: round(v, 1) for k, v in timings.items()}, "hardware": hardware,
                       "samples": {f"{r['test']} / {r['model']}": r["samples"] for r in rows},
                       "finetune_examples": examples_with_calls})
    samples = "\n\n".join(f"**{r['model']}, {r['test']}**\n\n```\n{r['samples'][0]['question']}\n{r['samples'][0]['completion']}\n```"
                          for r in rows if r["samples"] and r["test"].endswith("(larger)"))
    kept = "\n".join(examples_with_calls)
    ctx.write_report(f"# lab reproduce toolformer\n\n{PAPER}\n\n" + claims_table.markdown(claims, scale_gap(cfg))
                     + "\n## Filter\n\n" + markdown_table([stats["inline"], stats["prefix"]]) + "\n## Held-out problems\n\n" + markdown_table(table)
                     + f"\n## Finetuning texts with kept calls\n\n```\n{kept}\n```\n\n## Decoded samples\n\n{samples}\n\n"
                     + f"Times (s): {', '.join(f'{k} {v:.0f}' for k, v in timings.items())} on {hardware}, a shared machine.\n")
    claims_table.print_claims(claims, "lab reproduce toolformer")
    print("exact match: " + "; ".join(f"{r['test']} {r['model']} {r['exact_match']:.3f}" for r in rows)
          + f"; filter precision ({stats['used']}) {stats[stats['used']]['precision']}; {sum(c.verdict == 'holds' for c in claims)}/{len(claims)} claims hold")
