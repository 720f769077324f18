"""Tiny stand-in training runs for the serving tests, built offline from a config at a fixed seed, and their fixtures.

`build_tiny(kind, dest)` writes what a finetune run leaves behind: `dest/model/` (a
`save_pretrained` folder with a word-level tokenizer trained here) and `dest/summary.json`.
Random weights with a large init so greedy output varies with the input (parity checks mean something).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labcli import runs

KINDS = ("seq2seq", "causal-lm")
CORPUS = [
    "hello world", "good morning", "how are you", "thank you very much", "where is the temple",
    "the river is cold", "i like tea", "see you tomorrow", "what is your name", "my name is ram",
]


def build_tokenizer(folder: Path, special_lang: str | None):
    """A word-level tokenizer trained with `tokenizers` on the small corpus above."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"] + ([special_lang] if special_lang else [])
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=specials))
    if special_lang:  # seq2seq sources end in </s>, as mBART's do; causal prompts do not
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=64)
    fast.save_pretrained(folder)
    return fast


def build_tiny(kind: str, dest: Path, seed: int = 0) -> Path:
    """Write a tiny `kind` model run to `dest` (idempotent) and return `dest`."""
    import torch
    from transformers import (
        GenerationConfig,
        GPT2Config,
        GPT2LMHeadModel,
        MBartConfig,
        MBartForConditionalGeneration,
    )

    dest = Path(dest)
    if (dest / "summary.json").exists():
        return dest
    model_dir = dest / "model"
    torch.manual_seed(seed)
    if kind == "seq2seq":
        tok = build_tokenizer(model_dir, "new_NP")
        lang = tok.convert_tokens_to_ids("new_NP")
        cfg = MBartConfig(vocab_size=len(tok), d_model=32, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                          decoder_ffn_dim=64, max_position_embeddings=128, init_std=0.5, pad_token_id=1, bos_token_id=0,
                          eos_token_id=2, decoder_start_token_id=2, forced_bos_token_id=lang)
        model = MBartForConditionalGeneration(cfg)
        gen = GenerationConfig(decoder_start_token_id=2, forced_bos_token_id=lang, eos_token_id=2, pad_token_id=1,
                               bos_token_id=0, max_new_tokens=12, do_sample=False, num_beams=1)
    elif kind == "causal-lm":
        tok = build_tokenizer(model_dir, None)
        cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128, initializer_range=0.5,
                         bos_token_id=0, eos_token_id=2, pad_token_id=1)
        model = GPT2LMHeadModel(cfg)
        gen = GenerationConfig(eos_token_id=2, pad_token_id=1, bos_token_id=0, max_new_tokens=12,
                               do_sample=False, num_beams=1)
    else:
        raise ValueError(f"kind must be one of {KINDS}")
    model.generation_config = gen
    model.eval().save_pretrained(model_dir)
    runs.write_text(dest / "summary.json", json.dumps({"task": kind, "model": f"tiny-{kind}", "method": "random-init"}))
    return dest


# -- fixtures (imported by the conftest of every folder that serves a tiny run) ----------------------
# The runs live under the session's LAB_HOME, so every test folder shares one build and one ONNX export.

@pytest.fixture(scope="session")
def seq2seq_run(lab_home) -> Path:
    return build_tiny("seq2seq", lab_home / "test-runs" / "finetune-tiny-seq2seq")


@pytest.fixture(scope="session")
def causal_run(lab_home) -> Path:
    return build_tiny("causal-lm", lab_home / "test-runs" / "finetune-tiny-causal")


@pytest.fixture(scope="session")
def eager_seq2seq(seq2seq_run):
    """(model, tokenizer) of the seq2seq run, the reference every server is compared with."""
    from labcli.serving.export import load_eager
    from labcli.serving.source import resolve

    return load_eager(resolve(run=str(seq2seq_run)))


def only_run(runs: Path) -> Path:
    """The one run folder under `runs`."""
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


def one_line_error(result, starts: str) -> None:
    """A CLI result (lab_main or run_lab) that failed with one `error: ...` line, exit 2, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"error: {starts}"), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
