"""Evol-Instruct (Xu et al. 2023, WizardLM): evolve instructions in depth and in breadth with an LM,
eliminate failed evolutions by the paper's rules, then let a judge score each (instruction, response).

In-depth evolving rewrites an instruction to be harder in one of five ways (add constraints, deepen,
concretise, increase reasoning steps, complicate the input); in-breadth mutation writes a new, rarer
instruction of the same domain. The rewriting prompts follow the paper's appendix (worded here).
An evolution is eliminated (paper, section 3.3) when
1. it brings no information gain over the original (the LM judges the two "Equal");
2. the LM cannot respond: its response contains "sorry" and is shorter than 80 words;
3. the response is empty or only punctuation and stop words (too short to be an answer);
4. it copies words of the evolving prompt ("given prompt", "rewritten prompt", "#Created Prompt#", ...).
A failed instruction goes back into the pool and is evolved again in the next round.
The judge step ("GPT-4 filtering") scores each surviving pair 1-10 against a rubric; pairs below a
threshold are dropped.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

DEPTH_HEAD = ("I want you to act as a Prompt Rewriter. Rewrite the given prompt into a more complex version that "
              "famous AI systems (such as ChatGPT and GPT-4) find a bit harder to handle. The rewritten prompt must "
              "be reasonable and understandable and answerable by humans. Keep the non-text parts (tables, code) and "
              "the input of #The Given Prompt#. Complicate the given prompt with this method:\n{method}\n"
              "Do not make the #Rewritten Prompt# verbose: add only 10 to 20 words to #The Given Prompt#. "
              "'#The Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' must not appear in "
              "#Rewritten Prompt#.\n")
DEPTH_METHODS = {
    "add constraints": "Add one more constraint or requirement to #The Given Prompt#.",
    "deepen": "If #The Given Prompt# asks about certain issues, increase the depth and breadth of the inquiry.",
    "concretize": "Replace general concepts with more specific concepts.",
    "increase reasoning steps": "If #The Given Prompt# can be solved with a few simple thinking steps, rewrite it to "
                                "ask explicitly for multiple-step reasoning.",
    "complicate input": "Add input data in a structured format (a table, JSON, XML, code or a formula) that the "
                        "rewritten prompt asks to work with.",
}
BREADTH_HEAD = ("I want you to act as a Prompt Creator. Draw inspiration from the #Given Prompt# to create a brand new "
                "prompt. It should belong to the same domain as the #Given Prompt# but be even rarer. Its length and "
                "complexity should be similar to those of the #Given Prompt#. The #Created Prompt# must be reasonable "
                "and understandable and answerable by humans. '#Given Prompt#', '#Created Prompt#', 'given prompt' "
                "and 'created prompt' must not appear in #Created Prompt#.\n")
OPERATIONS = [*DEPTH_METHODS, "breadth"]
COPIED = ["given prompt", "rewritten prompt", "created prompt", "#the given prompt#", "#rewritten prompt#",
          "#given prompt#", "#created prompt#"]
STOPWORDS = set("""a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having he her here
hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which while
who whom why will with would you your yours yourself yourselves""".split())


def evolve_prompt(instruction: str, operation: str) -> str:
    if operation == "breadth":
        return BREADTH_HEAD + f"#Given Prompt#:\n{instruction.strip()}\n#Created Prompt#:\n"
    head = DEPTH_HEAD.format(method=DEPTH_METHODS[operation])
    return head + f"#The Given Prompt#:\n{instruction.strip()}\n#Rewritten Prompt#:\n"


def equality_prompt(first: str, second: str) -> str:
    return ("Here are two instructions to an AI assistant. Are they equal to each other, meaning that they have the "
            "same constraints and requirements and the same depth and breadth of inquiry?\n"
            f"The first instruction: {first.strip()}\nThe second instruction: {second.strip()}\n"
            "Your judgement (just answer Equal or Not Equal, no reason):")


def judged_equal(reply: str) -> bool:
    """True when the reply says Equal (and not Not Equal)."""
    text = reply.strip().lower()
    return text.startswith("equal")


def response_prompt(instruction: str) -> str:
    return f"### Instruction:\n{instruction.strip()}\n\n### Response:\n"


def elimination_reason(original: str, evolved: str, response: str, equal: bool) -> str | None:
    """Which of the paper's four rules eliminates an evolution, if any (checked in this order)."""
    lower = evolved.lower()
    if not evolved.strip():
        return "empty evolution"
    if any(c in lower for c in COPIED):
        return "copied prompt words"
    if equal or evolved.strip() == original.strip():
        return "no information gain"
    words = re.findall(r"[A-Za-z0-9']+", response.lower())
    if "sorry" in response.lower() and len(response.split()) < 80:
        return "LM cannot respond (sorry, < 80 words)"
    if not words or all(w in STOPWORDS for w in words):
        return "response only punctuation / stop words"
    return None


JUDGE_RUBRIC = ("Please act as an impartial judge and evaluate the quality of the response an AI assistant gives to "
                "the instruction below. Consider helpfulness, relevance, accuracy, depth, creativity and level of "
                "detail. Rate the response on a scale of 1 to 10 in the form \"Rating: N\".\n\n")


def judge_prompt(instruction: str, response: str) -> str:
    return JUDGE_RUBRIC + f"[Instruction]\n{instruction.strip()}\n\n[Response]\n{response.strip()}\n\nRating:"


def parse_rating(reply: str) -> int | None:
    """The first integer 1..10 of the reply (after "Rating:" when present), else None."""
    text = reply.split("Rating:", 1)[-1]
    m = re.search(r"\b(10|[1-9])\b", text)
    return int(m.group(1)) if m else None


@dataclass
class EvolveResult:
    pairs: list[dict]  # {"instruction", "response", "operation", "round", "parent"}
    eliminated: dict = field(default_factory=dict)  # rule -> count
    by_operation: dict = field(default_factory=dict)  # operation -> {"tried", "kept"}
    rounds: int = 0


def evolve(teacher, pool: list[str], rounds: int, *, rng: random.Random, batch_size: int = 16,
           max_tokens: int = 256, response_tokens: int = 256, temperature: float = 1.0, top_p: float = 1.0) -> EvolveResult:
    """`rounds` rounds over the pool: each instruction gets one random operation; survivors replace
    their parent in the next round's pool, failed ones are tried again."""
    from collections import Counter

    res = EvolveResult([])
    eliminated: Counter = Counter()
    ops = {op: Counter() for op in OPERATIONS}
    current = list(pool)
    for r in range(rounds):
        nxt = []
        for lo in range(0, len(current), batch_size):
            chunk = current[lo:lo + batch_size]
            chosen = [rng.choice(OPERATIONS) for _ in chunk]
            evolved = [c.text.strip() for c in teacher.complete([evolve_prompt(i, op) for i, op in zip(chunk, chosen)],
                                                                 max_tokens=max_tokens, temperature=temperature,
                                                                 top_p=top_p, stop=["\n#", "\n\n\n"])]
            responses = [c.text.strip() for c in teacher.complete([response_prompt(e) for e in evolved],
                                                                  max_tokens=response_tokens, temperature=temperature,
                                                                  top_p=top_p, stop=["### Instruction"])]
            equal = [judged_equal(c.text) for c in teacher.complete(
                [equality_prompt(o, e) for o, e in zip(chunk, evolved)], max_tokens=4, temperature=0.0, top_p=1.0,
                stop=["\n"])]
            for orig, op, ev, resp, eq in zip(chunk, chosen, evolved, responses, equal):
                ops[op]["tried"] += 1
                reason = elimination_reason(orig, ev, resp, eq)
                if reason:
                    eliminated[reason] += 1
                    nxt.append(orig)
                    continue
                ops[op]["kept"] += 1
                res.pairs.append({"instruction": ev, "response": resp, "operation": op, "round": r, "parent": orig})
                nxt.append(ev)
        current = nxt
        res.rounds = r + 1
    res.eliminated = dict(eliminated.most_common())
    res.by_operation = {op: dict(c) for op, c in ops.items()}
    return res


def judge(teacher, pairs: list[dict], threshold: int, *, batch_size: int = 16) -> tuple[list[dict], dict]:
    """Score every pair (`score`, None when the judge's reply has no rating); keep score >= threshold."""
    from collections import Counter

    hist: Counter = Counter()
    for lo in range(0, len(pairs), batch_size):
        chunk = pairs[lo:lo + batch_size]
        replies = teacher.complete([judge_prompt(p["instruction"], p["response"]) for p in chunk], max_tokens=8,
                                   temperature=0.0, top_p=1.0, stop=["\n"])
        for p, c in zip(chunk, replies):
            p["score"] = parse_rating(c.text)
            hist[p["score"]] += 1
    kept = [p for p in pairs if p["score"] is not None and p["score"] >= threshold]
    return kept, {str(k): v for k, v in sorted(hist.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))}
