"""RecurrentGPT (Zhou et al. 2023): long text from a fixed-context LM through a language-based recurrence.

Each step the LM reads a prompt holding the short-term memory (a summary), the paragraphs of the
long-term memory closest to the plan (a vector memory searched by embedding), and the plan, and
writes a paragraph, the new short-term memory and the next plan (`step`). Every paragraph goes into
the long-term memory. Any LM with `complete(prompts, max_tokens=, temperature=, top_p=, stop=)` and a
`context` in tokens works: `labcli.instruct.teacher` loads a hub id, a local folder or an
OpenAI-compatible endpoint. `ask` answers a question about the text from retrieved paragraphs, or,
for the window-only baseline, from the last tokens of the text that fit the LM's context.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

WORD = re.compile(r"\w+")
FIELDS = ("paragraph", "memory", "plan")


def embed(texts: list[str], dim: int = 1024) -> np.ndarray:
    """Hashed bag-of-words vectors (1 + log count per word, a stable hash into `dim` buckets),
    L2-normalised: cosine similarity = dot product. No model, so retrieval costs nothing to train."""
    out = np.zeros((len(texts), dim))
    for row, text in enumerate(texts):
        for word in WORD.findall(text.lower()):
            out[row, int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") % dim] += 1
    out = np.where(out > 0, 1 + np.log(np.maximum(out, 1)), 0)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class VectorMemory:
    """Long-term memory: texts and their embeddings; `search(query, k)` by cosine similarity."""

    def __init__(self, dim: int = 1024):
        self.dim, self.texts, self.vectors = dim, [], np.zeros((0, dim))

    def add(self, text: str) -> None:
        self.texts.append(text)
        self.vectors = np.vstack([self.vectors, embed([text], self.dim)])

    def search(self, query: str, k: int) -> list[str]:
        if not self.texts:
            return []
        scores = self.vectors @ embed([query], self.dim)[0]
        return [self.texts[i] for i in np.argsort(-scores, kind="stable")[:k]]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class State:
    memory: str  # short-term memory: a summary of the recent paragraphs
    plan: str  # what the next paragraph should be about
    paragraphs: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.paragraphs)


def step_prompt(state: State, related: list[str]) -> str:
    return f"memory : {state.memory}\nrelated : {' '.join(related)}\nplan : {state.plan}\nparagraph :"


def parse_output(text: str) -> dict[str, str]:
    """The model's `paragraph`, `memory` and `plan` from ' PARAGRAPH\\nmemory : ...\\nplan : ...';
    a missing section comes back empty."""
    out = dict.fromkeys(FIELDS, "")
    parts = re.split(r"\n?\s*(memory|plan)\s*:", text)
    out["paragraph"] = parts[0].strip()
    for name, value in zip(parts[1::2], parts[2::2]):
        if not out[name]:
            out[name] = value.strip().split("\n")[0].strip()
    return out


def step(lm, state: State, memory: VectorMemory, *, k: int = 2, max_tokens: int = 64, temperature: float = 1.0) -> dict:
    """One recurrence step: write a paragraph from (memory, related paragraphs, plan), store it in the
    long-term memory, and move the short-term memory and the plan on (kept when the model leaves
    them empty). Returns the parsed output."""
    prompt = step_prompt(state, memory.search(state.plan, k))
    (completion,) = lm.complete([prompt], max_tokens=max_tokens, temperature=temperature, top_p=1.0, stop=["\n\n"])
    out = parse_output(completion.text)
    if out["paragraph"]:
        state.paragraphs.append(out["paragraph"])
        memory.add(out["paragraph"])
    state.memory = out["memory"] or state.memory
    state.plan = out["plan"] or state.plan
    return out


def plant(state: State, memory: VectorMemory, paragraph: str) -> None:
    """A paragraph written into the text by hand (RecurrentGPT lets a person edit any step)."""
    state.paragraphs.append(paragraph)
    memory.add(paragraph)


def question_prompt(context: str, question: str) -> str:
    return f"related : {context}\nquestion : {question}"


def window(tokenizer, text: str, tokens: int) -> str:
    """The last `tokens` tokens of `text`, as text: what a fixed-context LM can still see."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[-tokens:], skip_special_tokens=True) if tokens > 0 else ""


def ask(lm, question: str, *, memory: VectorMemory | None = None, k: int = 2, state: State | None = None,
        tokenizer=None, window_tokens: int = 0, max_tokens: int = 4) -> str:
    """The LM's greedy answer from the `k` paragraphs retrieved for the question (memory given), or
    from the last `window_tokens` tokens of the text (the window-only baseline)."""
    if memory is not None:
        context = " ".join(memory.search(question, k))
    else:
        context = window(tokenizer, state.text, window_tokens)
    (completion,) = lm.complete([question_prompt(context, question)], max_tokens=max_tokens, temperature=0.0,
                                top_p=1.0, stop=["\n", "."])
    return completion.text.strip()
