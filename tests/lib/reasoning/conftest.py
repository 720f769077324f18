"""A tiny Llama and its tokenizer, trained on arith texts (built once per test session)."""

from __future__ import annotations

import pytest


def _tiny(dropout: float):
    from labcli.models import load_model
    from labcli.reasoning import rewards
    from labcli.reasoning.tasks import load_task

    examples = load_task("arith", "train", n=200)
    texts = [rewards.prompt(e) + rewards.target(e, True) for e in examples]
    loaded = load_model("tiny-llama", "causal-lm", tokenizer_texts=lambda: texts, vocab_size=300, seed=0, dropout=dropout)
    return loaded.model, loaded.tokenizer, [rewards.prompt(e) for e in examples[:5]]


@pytest.fixture(scope="session")
def tiny(lab_home):
    return _tiny(0.0)


@pytest.fixture(scope="session")
def tiny_dropout(lab_home):
    """The same model with dropout 0.3 everywhere: train mode would make every forward different."""
    return _tiny(0.3)
