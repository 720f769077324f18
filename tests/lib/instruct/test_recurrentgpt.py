"""RecurrentGPT's pieces: the embedding and vector memory, the output parser, one recurrence step, asking."""

from __future__ import annotations

import numpy as np

from labcli.instruct import recurrentgpt as rg
from labcli.instruct.teacher import Completion


def test_embedding_is_normalised_and_word_based():
    v = rg.embed(["Mira keeps a fox", "mira KEEPS a fox fox", ""])
    assert np.allclose(np.linalg.norm(v[:2], axis=1), 1.0) and not v[2].any()
    assert v[0] @ v[1] > 0.9  # the same words, case-folded


def test_vector_memory_finds_the_paragraph_about_the_query():
    memory = rg.VectorMemory()
    assert memory.search("anything", 2) == []
    for text in ["Mira keeps a fox at home .", "Ben walks to the river .", "Mira walks to the market ."]:
        memory.add(text)
    assert len(memory) == 3 and memory.search("Mira keeps a", 1) == ["Mira keeps a fox at home ."]
    assert memory.search("walks to the river", 2)[0] == "Ben walks to the river ."


def test_parse_output_reads_the_three_sections_with_or_without_newlines():
    text = " Ava walks to the bridge .\nmemory : Ava has a key .\nplan : Ben goes to the river\nextra"
    assert rg.parse_output(text) == {"paragraph": "Ava walks to the bridge .", "memory": "Ava has a key .",
                                     "plan": "Ben goes to the river"}
    assert rg.parse_output("Ava walks . memory : m plan : p") == {"paragraph": "Ava walks .", "memory": "m", "plan": "p"}
    assert rg.parse_output("only a paragraph") == {"paragraph": "only a paragraph", "memory": "", "plan": ""}


class Scripted:
    """A stand-in LM with the teacher interface that records its prompts (the real LMs are in the slow run)."""

    def __init__(self, replies):
        self.replies, self.prompts = iter(replies), []

    def complete(self, prompts, **kwargs):
        self.prompts += prompts
        return [Completion(next(self.replies), "stop")]


def test_step_writes_stores_and_moves_memory_and_plan_on():
    state, memory = rg.State("nothing yet .", "Ava goes to the bridge"), rg.VectorMemory()
    rg.plant(state, memory, "Mira keeps a fox at home .")
    lm = Scripted([" Ava walks to the bridge . memory : Ava has a key . plan : Ben goes to the river", " no sections"])
    rg.step(lm, state, memory, k=1)
    assert lm.prompts[0] == ("memory : nothing yet .\nrelated : Mira keeps a fox at home .\nplan : Ava goes to the bridge"
                             "\nparagraph :")
    assert state.paragraphs[-1] == "Ava walks to the bridge ." and len(memory) == 2
    assert (state.memory, state.plan) == ("Ava has a key .", "Ben goes to the river")
    rg.step(lm, state, memory)  # sections missing: memory and plan are kept
    assert (state.memory, state.plan) == ("Ava has a key .", "Ben goes to the river") and state.text.endswith("no sections")


def test_ask_uses_retrieved_paragraphs():
    memory = rg.VectorMemory()
    for text in ["Mira keeps a fox at home .", "Ben walks to the river ."]:
        memory.add(text)
    lm = Scripted([" fox"])
    assert rg.ask(lm, "Mira keeps a", memory=memory, k=1) == "fox"
    assert lm.prompts == ["related : Mira keeps a fox at home .\nquestion : Mira keeps a"]
