"""Prompt and target text, answer extraction, and the verifiable rewards.

A completion is `[step. step. ...] The answer is X.` and ends with EOS. The correctness reward is an
exact numeric match (numbers) or an exact choice match (yes/no, answerN); the format reward checks
that the completion ends in exactly one well-formed `The answer is X.` and was not truncated.
"""

from __future__ import annotations

import re

from labcli.reasoning.tasks import Example

ANSWER_RE = re.compile(r"[Tt]he answer is:?\s*\$?\s*(-?[\w.,/]+?)\s*\.?\s*$")
ANSWER_ANY = re.compile(r"[Tt]he answer is")


def prompt(ex: Example) -> str:
    return f"Question: {ex.question}\nAnswer:"


def target(ex: Example, cot: bool, steps: tuple[str, ...] | None = None) -> str:
    """What the student learns to write after the prompt: optional steps, then the answer line."""
    steps = ex.rationale if steps is None else steps
    body = " ".join(steps) + " " if cot and steps else ""
    return f" {body}The answer is {ex.answer}."


def few_shot_prompt(ex: Example, shots: list[Example]) -> str:
    """CoT prompting: worked examples before the question (Wei et al. 2022)."""
    demos = "".join(f"{prompt(s)}{target(s, cot=True)}\n\n" for s in shots)
    return demos + prompt(ex)


def extract_answer(completion: str) -> str | None:
    """The X of the last `The answer is X`, normalised; None when there is none."""
    hits = re.findall(r"[Tt]he answer is:?\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?|[A-Za-z]+[0-9]*)", completion)
    if not hits:
        return None
    raw = hits[-1].replace(",", "").lower()
    try:
        value = float(raw)
        return str(int(value)) if value == int(value) else f"{value:g}"
    except ValueError:
        return raw


def correctness_reward(completion: str, ex: Example) -> float:
    got = extract_answer(completion)
    if got is None:
        return 0.0
    if ex.kind == "number":
        try:
            return float(abs(float(got) - float(ex.answer)) < 1e-6)
        except ValueError:
            return 0.0
    return float(got == ex.answer.lower())


def format_reward(completion: str, truncated: bool = False) -> float:
    """1 when the completion ends with exactly one `The answer is X.` and was not cut off."""
    if truncated:
        return 0.0
    text = completion.strip()
    return float(len(ANSWER_ANY.findall(text)) == 1 and ANSWER_RE.search(text) is not None and text.endswith("."))


def overlong_penalty(length: int, max_len: int, cache: int) -> float:
    """DAPO's soft overlong punishment: 0 up to max_len - cache, then linear down to -1 at max_len."""
    if cache <= 0 or length <= max_len - cache:
        return 0.0
    if length >= max_len:
        return -1.0
    return (max_len - cache - length) / cache


def reward(completion: str, ex: Example, truncated: bool = False, format_weight: float = 0.1) -> tuple[float, float]:
    """(total reward, correctness) of one completion."""
    correct = correctness_reward(completion, ex)
    return correct + format_weight * format_reward(completion, truncated), correct
