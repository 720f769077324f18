"""The Streamlit translation app for a `lab finetune newari` run (`lab serve streamlit --run DIR`).

The run folder comes from LAB_RUN_DIR. Text in, Newari out, with the run's model, method and scores.
"""

import json
import os
from pathlib import Path

import streamlit as st

RUN = Path(os.environ.get("LAB_RUN_DIR", "."))


@st.cache_resource
def load_translator(run_dir: str):
    from labcli.models import load_model
    from labcli.models.translation import Translator

    summary = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
    loaded = load_model(str(Path(run_dir) / "model"), summary.get("task", "seq2seq"))
    config = (Path(run_dir) / "config.yaml").read_text(encoding="utf-8")
    import yaml

    cfg = yaml.safe_load(config) or {}
    translator = Translator(loaded.tokenizer, loaded.task, cfg.get("prompt", "{en}"), cfg.get("max_source_len", 64),
                            cfg.get("max_target_len", 64), cfg.get("src_lang"), cfg.get("tgt_lang"),
                            (cfg.get("eval") or {}).get("no_repeat_ngram_size", 0))
    return translator, loaded.model, summary


translator, model, summary = load_translator(str(RUN))
st.title("English → Newari (नेपाल भाषा)")
st.caption(f"run {RUN.name} · model {summary.get('model')} · method {summary.get('method')}")
cols = st.columns(3)
for col, key in zip(cols, ("bleu", "chrf++", "ter")):
    col.metric(key.upper() if key != "chrf++" else "chrF++", summary.get(key, "-"))
st.caption("Test scores on silver data (partly machine-translated references): compare runs, don't over-read.")
text = st.text_area("English", "How are you?", key="source")
if st.button("Translate", key="go") and text.strip():
    hyps, _ = translator.translate(model, [text.strip()], num_beams=1)
    st.markdown("**Newari:**")
    st.code(hyps[0] or "(empty output)", language=None)
