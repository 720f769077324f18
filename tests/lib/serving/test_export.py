"""ONNX export: the bundles of the tiny runs match eager (new shapes too), and a bundle whose greedy text
differs from eager is refused. The exports are cached in the session's LAB_HOME and shared with the
serving tests (same runs, same max_new_tokens)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from labcli.errors import UserError
from labcli.serving.decoding import plain
from labcli.serving.export import (
    SAMPLE_TEXTS,
    TOLERANCE,
    check_parity,
    eager_generate,
    eager_logits,
    export_bundle,
    load_eager,
    require_parity,
)
from labcli.serving.greedy import OnnxGenerator
from labcli.serving.source import resolve

pytestmark = pytest.mark.slow
TEXTS = SAMPLE_TEXTS + ["i like tea", "see you tomorrow"]


def test_causal_lm_dynamic_axes_match_eager(causal_run):
    """A decoder-only run: logits for a batch/sequence shape the export never saw, and greedy text, equal eager."""
    source = resolve(run=str(causal_run))
    bundle = export_bundle(source, plain("causal-lm", 12))
    model, tokenizer = load_eager(source)
    generator = OnnxGenerator(bundle)
    ids = np.random.default_rng(0).integers(3, model.config.vocab_size, size=(5, 11)).astype(np.int64)
    mask = np.ones_like(ids)
    assert np.abs(generator.logits(ids, mask) - eager_logits(model, ids, mask)).max() <= TOLERANCE
    assert generator.generate(TEXTS) == eager_generate(model, tokenizer, TEXTS, plain("causal-lm", 12))


def test_a_greedy_text_mismatch_is_refused(seq2seq_run, eager_seq2seq, tmp_path):
    source = resolve(run=str(seq2seq_run))
    bundle = export_bundle(source, plain("seq2seq", 12))
    parity = json.loads((bundle / "parity.json").read_text())
    assert parity["text_match"] and parity["tokenizer_match"] and parity["max_abs_diff"] <= TOLERANCE
    # the same graphs decoding with another forced first token: logits still match, greedy text does not
    broken = shutil.copytree(bundle, tmp_path / "bundle")
    meta = json.loads((broken / "meta.json").read_text())
    meta["forced_bos_token_id"] = meta["eos_token_id"]
    (broken / "meta.json").write_text(json.dumps(meta))
    model, tokenizer = eager_seq2seq
    parity = check_parity(broken, model, tokenizer, plain("seq2seq", 12))
    assert parity["max_abs_diff"] <= TOLERANCE and not parity["text_match"]
    with pytest.raises(UserError, match="ONNX greedy text differs from eager"):
        require_parity(parity, source)


@pytest.mark.parametrize("kind", ["seq2seq", "causal-lm"])
def test_the_runs_decoding_travels_with_the_bundle(kind, seq2seq_run, causal_run):
    """A run that decoded with no_repeat_ngram_size (and, causal, a prompt): the ONNX bundle decodes the same way
    (numpy n-gram ban = transformers' NoRepeatNGramLogitsProcessor), and differently from plain greedy."""
    source = resolve(run=str(seq2seq_run if kind == "seq2seq" else causal_run))
    decoding = plain(kind, 12)
    decoding["generate"]["no_repeat_ngram_size"] = 2
    if kind == "causal-lm":
        decoding["prompt"] = "{en} ="
    bundle = export_bundle(source, decoding)
    model, tokenizer = load_eager(source)
    served = OnnxGenerator(bundle).generate(TEXTS)
    assert served == eager_generate(model, tokenizer, TEXTS, decoding)
    assert served != eager_generate(model, tokenizer, TEXTS, plain(kind, 12))  # the ban (and prompt) change the text
