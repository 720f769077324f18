"""English -> Newari translation demo (exported by `lab export space`). Runs on a Hugging Face Space.

Self-contained: needs only transformers, torch and streamlit; the model sits in ./model, the page in
newari_page.py (+ fonts/), the run's decoding in decoding.json (the exact tokenization and generate
arguments its evaluation used) and what the page says about the run in run_summary.json.
"""

import json
from pathlib import Path

import streamlit as st
import torch
from newari_page import page
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

HERE = Path(__file__).parent
CARD = json.loads((HERE / "run_summary.json").read_text(encoding="utf-8"))
DECODING = json.loads((HERE / "decoding.json").read_text(encoding="utf-8"))


@st.cache_resource
def load():
    # its own seq2seq-vs-causal choice: a Space runs this file without labcli installed
    auto = AutoModelForSeq2SeqLM if DECODING["task"] == "seq2seq" else AutoModelForCausalLM
    tok = AutoTokenizer.from_pretrained(HERE / "model")
    if DECODING.get("src_lang") and hasattr(tok, "src_lang"):  # mBART-50: the source language code, as the run set it
        tok.src_lang = DECODING["src_lang"]
    if DECODING["task"] == "causal-lm":
        tok.padding_side = "left"
        tok.pad_token = tok.pad_token or tok.eos_token
    return tok, auto.from_pretrained(HERE / "model").eval()


@torch.no_grad()
def translate(text: str) -> str:
    """As labcli.serving.decoding.generate: the run's tokenization, then generate with the run's arguments."""
    tok, model = load()
    if DECODING.get("prompt"):
        enc = tok([DECODING["prompt"].format(en=text)], return_tensors="pt", add_special_tokens=False)
    else:
        limit = DECODING.get("max_source_len")
        enc = tok([text], return_tensors="pt", truncation=bool(limit), max_length=limit)
    enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    out = model.generate(**enc, **DECODING["generate"])
    if DECODING["task"] == "causal-lm":
        out = out[:, enc["input_ids"].shape[1]:]
    return tok.decode(out[0], skip_special_tokens=True).strip()


page(translate, CARD["page"])
