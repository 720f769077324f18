"""Instruction SFT examples: Alpaca files, prompts (chat template or Alpaca), loss on the response only."""

from __future__ import annotations

import pytest

from labcli.errors import UserError
from labcli.instruct import sft


@pytest.fixture(scope="module")
def tokenizer(lab_home):
    from labcli.models.tokenizer import train_tokenizer

    return train_tokenizer(["Name a river.", "The Rhine.", "Below is an instruction"] * 3, vocab_size=120)


def test_read_alpaca_accepts_jsonl_and_json_lists(tmp_path):
    jl = tmp_path / "d.jsonl"
    jl.write_text('\ufeff{"instruction": "Name a river.", "output": "The Rhine."}\r\n', encoding="utf-8")
    assert sft.read_alpaca(jl) == [{"instruction": "Name a river.", "input": "", "output": "The Rhine."}]
    js = tmp_path / "d.json"
    js.write_text('[{"instruction": "Add.", "input": "2 3", "output": "5"}]', encoding="utf-8")
    assert sft.read_alpaca(js)[0]["input"] == "2 3"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "output": "y"}\n{"output": "y"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="record 2 has no instruction"):
        sft.read_alpaca(bad)
    with pytest.raises(UserError, match="data file not found"):
        sft.read_alpaca(tmp_path / "none.jsonl")


def test_alpaca_prompt_without_a_chat_template(tokenizer):
    assert sft.prompt_text(tokenizer, {"instruction": "Name a river.", "input": ""}).endswith(
        "### Instruction:\nName a river.\n\n### Response:\n")
    assert "### Input:\n2 3\n\n" in sft.prompt_text(tokenizer, {"instruction": "Add.", "input": "2 3"})


def test_chat_template_is_used_when_the_tokenizer_has_one(tokenizer):
    tokenizer.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
    try:
        assert sft.prompt_text(tokenizer, {"instruction": "Name a river.", "input": "Europe"}) == \
            "<|user|>Name a river.\n\nEurope<|assistant|>"
    finally:
        tokenizer.chat_template = None


def test_loss_is_on_the_response_only(tokenizer):
    record = {"instruction": "Name a river.", "input": "", "output": "The Rhine."}
    ex = sft.causal_example(tokenizer, record, max_len=512)
    n_prompt = len(tokenizer(sft.prompt_text(tokenizer, record), add_special_tokens=False)["input_ids"])
    assert (ex["labels"][:n_prompt] == -100).all() and (ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]).all()
    assert ex["labels"][-1] == tokenizer.eos_token_id
    s2s = sft.seq2seq_example(tokenizer, record, max_len=512)
    assert tokenizer.decode(s2s["labels"], skip_special_tokens=True).replace(" ", "") == "TheRhine."
