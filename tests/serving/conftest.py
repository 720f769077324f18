"""Fixtures for the serving tests: tiny training runs (seq2seq and causal-lm) built once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_run import build_tiny  # noqa: E402


@pytest.fixture(scope="session")
def seq2seq_run(tmp_path_factory, lab_home) -> Path:
    return build_tiny("seq2seq", tmp_path_factory.mktemp("runs") / "finetune-tiny-seq2seq")


@pytest.fixture(scope="session")
def causal_run(tmp_path_factory, lab_home) -> Path:
    return build_tiny("causal-lm", tmp_path_factory.mktemp("runs") / "finetune-tiny-causal")


@pytest.fixture(scope="session")
def eager_seq2seq(seq2seq_run):
    """(model, tokenizer) of the seq2seq run, the reference every server is compared with."""
    from labcli.serving.export import load_eager
    from labcli.serving.source import resolve

    return load_eager(resolve(run=str(seq2seq_run)))
