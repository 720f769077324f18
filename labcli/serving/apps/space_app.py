"""English -> Newari translation demo (exported by `lab export space`). Runs on a Hugging Face Space.

Self-contained: needs only transformers, torch and streamlit; the model sits in ./model.
"""

import json
from pathlib import Path

import streamlit as st
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

HERE = Path(__file__).parent
CARD = json.loads((HERE / "run_summary.json").read_text(encoding="utf-8"))
PROMPT = CARD.get("prompt", "Translate English to Newari.\nEnglish: {en}\nNewari:")


@st.cache_resource
def load():
    # its own seq2seq-vs-causal choice: a Space runs this file without labcli installed
    auto = AutoModelForSeq2SeqLM if CARD.get("task", "seq2seq") == "seq2seq" else AutoModelForCausalLM
    tok = AutoTokenizer.from_pretrained(HERE / "model")
    return tok, auto.from_pretrained(HERE / "model").eval()


@torch.no_grad()
def translate(text: str) -> str:
    tok, model = load()
    causal = CARD.get("task") == "causal-lm"
    if causal:
        enc = tok(PROMPT.format(en=text), return_tensors="pt", add_special_tokens=False)
    else:
        enc = tok(text, return_tensors="pt", truncation=True, max_length=128)
    out = model.generate(**enc, max_new_tokens=64, num_beams=1, do_sample=False)
    if causal:
        out = out[:, enc["input_ids"].shape[1]:]
    return tok.decode(out[0], skip_special_tokens=True).strip()


st.title("English → Newari (नेपाल भाषा)")
st.caption(f"model {CARD.get('model')} · method {CARD.get('method')} · test chrF++ {CARD.get('chrf++')} "
           f"· BLEU {CARD.get('bleu')} (silver data: compare, don't over-read)")
text = st.text_area("English", "How are you?")
if st.button("Translate") and text.strip():
    st.markdown(f"**Newari:** {translate(text.strip())}")
