"""Instruction SFT examples: Alpaca-format records -> prompt / response, with the loss on the response only.

A tokenizer with a chat template gets its own template (one user turn, the generation prompt added);
one without gets the Stanford Alpaca prompt. Causal LMs see prompt + response with the prompt's labels
masked (-100); seq2seq models (T5) get the prompt as encoder input and the response as labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from labcli.errors import UserError

ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                   "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def read_alpaca(path: str | Path) -> list[dict]:
    """Alpaca records ({"instruction", "input"?, "output"}) from a JSON list or a JSONL file."""
    from labcli.config import read_user_text

    file = Path(path)
    if not file.is_file():
        raise UserError(f"data file not found: {file}", "pass data=FILE (.json list or .jsonl of instruction/input/output)")
    text = read_user_text(file).strip()
    try:
        rows = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
    except json.JSONDecodeError as exc:
        raise UserError(f"{file} is not valid JSON / JSONL ({exc.msg}, line {exc.lineno})",
                        "one {\"instruction\", \"input\", \"output\"} object per line, or a JSON list") from None
    out = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not str(row.get("instruction", "")).strip() or "output" not in row:
            raise UserError(f"{file}: record {n} has no instruction or no output",
                            "each record needs \"instruction\" and \"output\" (\"input\" optional)")
        out.append({"instruction": str(row["instruction"]), "input": str(row.get("input") or ""),
                    "output": str(row["output"])})
    if not out:
        raise UserError(f"{file} holds no records", "one {\"instruction\", \"input\", \"output\"} object per line")
    return out


def prompt_text(tokenizer, record: dict) -> str:
    """The prompt the model sees: the tokenizer's chat template when it has one, else Alpaca's."""
    instruction, inp = record["instruction"].strip(), record.get("input", "").strip()
    if getattr(tokenizer, "chat_template", None):
        content = instruction + (f"\n\n{inp}" if inp else "")
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    return (ALPACA_INPUT if inp else ALPACA_NO_INPUT).format(instruction=instruction, input=inp)


def causal_example(tokenizer, record: dict, max_len: int) -> dict:
    """prompt + response + EOS, labels -100 on the prompt; left-truncated to max_len."""
    p = tokenizer(prompt_text(tokenizer, record), add_special_tokens=False)["input_ids"]
    r = tokenizer(record["output"].strip(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids, labels = (p + r)[-max_len:], ([-100] * len(p) + r)[-max_len:]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}


def seq2seq_example(tokenizer, record: dict, max_len: int) -> dict:
    """Encoder input = the prompt, labels = the response + EOS (both truncated to max_len)."""
    p = tokenizer(prompt_text(tokenizer, record), add_special_tokens=False)["input_ids"][-max_len:]
    r = (tokenizer(record["output"].strip(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])[:max_len]
    return {"input_ids": torch.tensor(p), "labels": torch.tensor(r)}
