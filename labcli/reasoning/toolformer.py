"""Toolformer's self-supervised tool-use data (Schick et al. 2023) on arithmetic word problems.

A text is a generated problem (`arith`) and its worked solution: "Q...?\n37 + 48 = 85. Answer: 85."
`sample_candidates` proposes calls at positions inside the solution: at each number, expressions of
the two numbers written just before it (two of the four operators, drawn at random), plus planted
useless calls on random operands. `annotate` scores every candidate with the filter of
`labcli.reasoning.tools` (weighted loss of the following tokens with the call prepended, L- - L+ >= τ)
and `with_calls` writes the kept calls into the text, where the model is then finetuned on them;
`with_random_calls` writes sampled calls (useful or not) into pretraining text.
A candidate is *useful* when its result is the number it is placed before: the ground truth that the
filter's precision is measured against (the filter never sees it).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np

from labcli.reasoning.arith import Problem
from labcli.reasoning.tools import calculator, call_losses_batch, format_call

NUMBER = re.compile(r"\d+")
ANSWER = re.compile(r"Answer: (-?\d+)")
OPS = "+-*/"


def problem_text(problem: Problem) -> tuple[str, str]:
    """(prompt, solution): the question on its own line, then the steps and the answer."""
    return problem.question + "\n", " ".join(problem.steps) + f" Answer: {problem.answer}."


@dataclass(frozen=True)
class Candidate:
    text: int  # index of the text
    position: int  # character offset in prompt + solution where the call goes
    arg: str
    result: str
    planted: bool  # a deliberately useless call (random operands)
    useful: bool  # the result is the number written at `position`


def sample_candidates(prompt: str, solution: str, index: int, rng: random.Random, ops_per_position: int = 2,
                      planted: int = 1) -> list[Candidate]:
    text = prompt + solution
    spans = [(m.start() + len(prompt), m.group()) for m in NUMBER.finditer(solution)]
    out = []
    for position, number in spans:
        before = NUMBER.findall(text[:position])
        if len(before) < 2:
            continue
        x, y = before[-2:]
        for op in rng.sample(OPS, ops_per_position):
            arg = f"{x} {op} {y}"
            result = calculator(arg)
            if not result.startswith("error"):
                out.append(Candidate(index, position, arg, result, False, result == number))
    for _ in range(planted):
        position, number = rng.choice(spans)
        top = 10 ** max(len(number), 2) - 1
        arg = f"{rng.randint(2, top)} {rng.choice('+-*')} {rng.randint(2, top)}"
        result = calculator(arg)
        out.append(Candidate(index, position, arg, result, True, result == number))
    return out


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    loss_none: float
    loss_no_result: float
    loss_with_result: float

    @property
    def gain(self) -> float:
        """L- - L+: how much the result lowers the weighted loss of the following tokens."""
        return min(self.loss_none, self.loss_no_result) - self.loss_with_result


def annotate(model, tokenizer, texts: list[str], candidates: list[Candidate], decay: float = 0.2,
             inline: bool = False) -> list[Scored]:
    """The three weighted losses of every candidate (one padded forward pass per text and position);
    `inline`: the call is written at its position instead of prepended to the text."""
    groups: dict[tuple[int, int], list[Candidate]] = {}
    for c in candidates:
        groups.setdefault((c.text, c.position), []).append(c)
    out = []
    for (index, position), group in groups.items():
        none, empty, full = call_losses_batch(model, tokenizer, texts[index], position,
                                              [("Calculator", c.arg, c.result) for c in group], decay,
                                              bos=tokenizer.bos_token, inline=inline)
        out += [Scored(c, none, float(e), float(f)) for c, e, f in zip(group, empty, full)]
    return out


def keep(scored: list[Scored], tau: float) -> list[Scored]:
    """The calls that pass the filter; at most one per position (the largest gain), as in the paper."""
    best: dict[tuple[int, int], Scored] = {}
    for s in scored:
        key = (s.candidate.text, s.candidate.position)
        if s.gain >= tau and (key not in best or s.gain > best[key].gain):
            best[key] = s
    return list(best.values())


def with_calls(text: str, calls: list[Candidate]) -> str:
    """`text` with each call (and its result) written in front of its position."""
    for c in sorted(calls, key=lambda c: -c.position):
        text = text[:c.position] + format_call("Calculator", c.arg, c.result) + " " + text[c.position:]
    return text


def with_random_calls(prompt: str, solution: str, rng: random.Random, calls: int = 1) -> str:
    """The solution with `calls` sampled calls written in at random numbers, useful or not: text in
    which the call syntax occurs, as code and calculator transcripts occur in a real LM's corpus."""
    pool = [c for c in sample_candidates(prompt, solution, 0, rng, 1, 0)]
    picked = {c.position: c for c in rng.sample(pool, min(calls, len(pool)))}
    return with_calls(prompt + solution, list(picked.values()))[len(prompt):]


def filter_stats(scored: list[Scored], kept: list[Scored]) -> dict:
    """Precision of the kept calls (useful / kept), recall of the useful ones, and how the planted
    useless calls fared."""
    useful = sum(s.candidate.useful for s in scored)
    hits = sum(s.candidate.useful for s in kept)
    planted = [s for s in scored if s.candidate.planted and not s.candidate.useful]
    planted_kept = sum(1 for s in kept if s.candidate.planted and not s.candidate.useful)
    gains = np.array([s.gain for s in scored]) if scored else np.zeros(1)
    is_useful = np.array([s.candidate.useful for s in scored]) if scored else np.zeros(1, bool)
    return {"candidates": len(scored), "useful_candidates": useful, "kept": len(kept), "kept_useful": hits,
            "precision": hits / len(kept) if kept else None, "recall": hits / useful if useful else None,
            "planted_useless": len(planted), "planted_kept": planted_kept,
            "mean_gain_useful": float(gains[is_useful].mean()) if is_useful.any() else None,
            "mean_gain_useless": float(gains[~is_useful].mean()) if (~is_useful).any() else None}


def exact_match(completion: str, answer: int) -> bool:
    m = ANSWER.search(completion)
    return m is not None and int(m.group(1)) == answer
