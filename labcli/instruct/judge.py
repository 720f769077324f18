"""Pairwise judging in the MT-Bench / AlpacaEval shape: a model's answers against a reference's.

Each instruction is judged twice, the model's answer shown first and then second (MT-Bench's swap).
A verdict counts only when it survives the swap; a flip (the judge picked the same *position* both
times) or an explicit tie is a tie. Win rate = (wins + ties / 2) / n, AlpacaEval's convention.

A judge is any function `judge(instruction, first_answer, second_answer) -> "A" | "B" | "tie"`:
tests pass a deterministic one; `LMJudge` asks a causal LM in this process (MT-Bench's pairwise
prompt, verdict = the likelier of the tokens A / B / C after "[["), `EndpointJudge` asks an
OpenAI-compatible server through the instruct teacher's client and parses "[[A]]" / "[[B]]" / "[[C]]".

What a judge can tell is measured beside the win rate: how often it picks a position rather than an
answer (`position_flip_rate`), how often its surviving verdicts agree with "the longer answer wins"
(`length_agreement`), and a control it must pass to be worth reading: the right human answer vs
another instruction's human answer (`control_win_rate`, 0.5 = cannot tell them apart).
"""

from __future__ import annotations

import math
import re
from typing import Callable, Literal

Verdict = Literal["A", "B", "tie"]
Judge = Callable[[str, str, str], Verdict]

SYSTEM = ("Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
          "to the user question displayed below. You should choose the assistant that follows the user's instructions "
          "and answers the user's question better. Avoid any position biases and ensure that the order in which the "
          "responses were presented does not influence your decision. Do not allow the length of the responses to "
          "influence your evaluation. Output your final verdict by strictly following this format: \"[[A]]\" if "
          "assistant A is better, \"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie.")
TEMPLATE = ("{system}\n\n[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{a}\n"
            "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{b}\n"
            "[The End of Assistant B's Answer]\n\nVerdict: [[")


def judge_prompt(question: str, a: str, b: str, max_chars: int = 1500) -> str:
    """MT-Bench's pairwise prompt (its "pair-v2" system text), ending where the verdict letter goes."""
    return TEMPLATE.format(system=SYSTEM, question=question[:max_chars], a=a[:max_chars], b=b[:max_chars])


def longer_answer(question: str, a: str, b: str) -> Verdict:
    """The trivial baseline judge: the longer answer wins."""
    return "A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie"


def outcome(judge: Judge, question: str, model: str, reference: str) -> dict:
    """Both orders; the model's outcome ("win" / "loss" / "tie") and whether the judge flipped."""
    first, second = judge(question, model, reference), judge(question, reference, model)
    as_model = {"A": "win", "B": "loss"}.get(first, "tie"), {"B": "win", "A": "loss"}.get(second, "tie")
    result = as_model[0] if as_model[0] == as_model[1] else "tie"
    return {"first": first, "second": second, "outcome": result, "flipped": first == second and first != "tie"}


def win_rate(outcomes: list[str]) -> tuple[float, float]:
    """(wins + ties/2) / n and its standard error over instructions."""
    scores = [1.0 if o == "win" else 0.5 if o == "tie" else 0.0 for o in outcomes]
    n = len(scores)
    mean = sum(scores) / n
    var = sum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def compare(items: list[dict], judge: Judge) -> dict:
    """`items`: {"instruction", "model", "reference"}. Win rate of "model" over "reference" and what the
    judge did: wins / losses / ties, flips (position bias), first-position share, length agreement."""
    rows = [{**outcome(judge, it["instruction"], it["model"], it["reference"]),
             "longer": outcome(longer_answer, it["instruction"], it["model"], it["reference"])["outcome"]} for it in items]
    outcomes = [r["outcome"] for r in rows]
    rate, stderr = win_rate(outcomes)
    raw = [v for r in rows for v in (r["first"], r["second"]) if v != "tie"]
    decided = [r for r in rows if r["outcome"] != "tie"]
    return {"n": len(rows), "win_rate": round(rate, 4), "win_rate_stderr": round(stderr, 4),
            "wins": outcomes.count("win"), "losses": outcomes.count("loss"), "ties": outcomes.count("tie"),
            "position_flip_rate": round(sum(r["flipped"] for r in rows) / len(rows), 4),
            "first_position_share": round(raw.count("A") / len(raw), 4) if raw else None,
            "length_agreement": round(sum(r["outcome"] == r["longer"] for r in decided) / len(decided), 4) if decided else None,
            "rows": rows}


def control_items(records: list[dict]) -> list[dict]:
    """The right human answer ("model") against the next instruction's human answer ("reference")."""
    return [{"instruction": r["instruction"], "model": r["output"], "reference": records[(i + 1) % len(records)]["output"]}
            for i, r in enumerate(records)]


class LMJudge:
    """A causal LM in this process: the verdict is the most likely of A / B / C after the prompt's "[["."""

    def __init__(self, model, tokenizer, name: str):
        import torch

        from labcli.errors import UserError

        self.model, self.tokenizer, self.name, self._torch = model.eval(), tokenizer, name, torch
        ids = [tokenizer(letter, add_special_tokens=False)["input_ids"] for letter in "ABC"]
        if any(not i for i in ids) or len({i[0] for i in ids}) < 3:
            raise UserError(f"judge {name}: its tokenizer does not give A, B and C distinct first tokens",
                            "use another judge model")
        self.letters = [i[0] for i in ids]
        config = model.config
        self.context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 2048

    def __call__(self, question: str, a: str, b: str) -> Verdict:
        torch = self._torch
        ids = self.tokenizer(judge_prompt(question, a, b), add_special_tokens=False)["input_ids"][-self.context:]
        device = next(self.model.parameters()).device
        with torch.no_grad():
            logits = self.model(torch.tensor([ids], device=device)).logits[0, -1]
        best = int(torch.argmax(logits[self.letters]))
        return ("A", "B", "tie")[best]


class EndpointJudge:
    """An OpenAI-compatible server (labcli.instruct.teacher.EndpointTeacher), greedy, verdict parsed
    from "[[A]]" / "[[B]]" / "[[C]]"; anything else is a tie and counted in `unparsed`."""

    def __init__(self, teacher):
        self.teacher, self.name, self.unparsed = teacher, teacher.name, 0

    def __call__(self, question: str, a: str, b: str) -> Verdict:
        prompt = judge_prompt(question, a, b).removesuffix("Verdict: [[")
        text = self.teacher.complete([prompt], max_tokens=512, temperature=0.0, top_p=1.0, stop=[])[0].text
        found = re.findall(r"\[\[([ABC])\]\]", text)
        if not found:
            self.unparsed += 1
            return "tie"
        return {"A": "A", "B": "B", "C": "tie"}[found[-1]]


def load_judge(spec: str, model_name: str | None, key_env: str, seed: int, device) -> Judge:
    """A hub id, a local folder, a tiny-* preset or http(s)://HOST/v1, loaded like an instruct teacher."""
    from labcli.instruct.teacher import EndpointTeacher, load_teacher

    teacher = load_teacher(spec, model_name, key_env, seed, device)
    if isinstance(teacher, EndpointTeacher):
        return EndpointJudge(teacher)
    return LMJudge(teacher.model, teacher.tokenizer, spec)


def answers(model, tokenizer, task: str, records: list[dict], *, max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy answers of a model to instruction records, prompted as lab's instruction SFT trains it."""
    import torch

    from labcli.instruct.sft import prompt_text
    from labcli.instruct.teacher import LocalTeacher

    prompts = [prompt_text(tokenizer, r) for r in records]
    out: list[str] = []
    if task != "seq2seq":
        teacher = LocalTeacher(model, tokenizer, "answers")
        for i in range(0, len(prompts), batch_size):
            out += [c.text.strip() for c in teacher.complete(prompts[i:i + batch_size], max_tokens=max_new_tokens,
                                                              temperature=0.0, top_p=1.0, stop=[])]
        return out
    model.eval()
    device = next(model.parameters()).device
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=512,
                        add_special_tokens=False).to(device)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        out += [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    return out
