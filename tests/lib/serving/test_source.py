"""Which model to serve (--run / --model) and which runs the Streamlit app takes: one-line errors."""

from __future__ import annotations

import json

import pytest

from labcli.errors import UserError
from labcli.serving.source import resolve, slug, translation_run


def test_resolve_errors(tmp_path):
    with pytest.raises(UserError, match="one of --run DIR or --model NAME, not both"):
        resolve("a", "b")  # neither: the default run (tests/recipes/serve/test_walk.py)
    with pytest.raises(UserError, match="run folder not found"):
        resolve(run=str(tmp_path / "missing"))
    with pytest.raises(UserError, match="has no model/ folder"):
        resolve(run=str(tmp_path))
    with pytest.raises(UserError, match="unknown preset"):
        resolve(model="tiny-nothing")
    with pytest.raises(UserError, match="not a model folder"):
        resolve(model=str(tmp_path))


def test_resolve_reads_the_task_from_the_run_or_the_config(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"is_encoder_decoder": True}))
    assert resolve(run=str(tmp_path)).task == "seq2seq"
    (tmp_path / "summary.json").write_text(json.dumps({"task": "causal-lm"}))
    source = resolve(model=str(tmp_path))  # a run folder given as --model works too
    assert source.task == "causal-lm" and source.model_dir == tmp_path / "model"
    (tmp_path / "summary.json").write_text(json.dumps({"task": "classification"}))
    with pytest.raises(UserError, match="task 'classification' cannot be served"):
        resolve(run=str(tmp_path))
    assert slug("Finetune-Newari 2026!") == "finetune_newari_2026"


def test_translation_run_names_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="has no model/config.json"):
        translation_run(str(tmp_path))
