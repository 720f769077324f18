"""The Streamlit translation app for a `lab finetune newari` run (`lab serve streamlit --run DIR`).

The run folder comes from LAB_RUN_DIR, torch threads from LAB_THREADS. Text in, Newari out, with
the run's model, method and scores.
"""

import os
from pathlib import Path

import streamlit as st

RUN = Path(os.environ.get("LAB_RUN_DIR", "."))


@st.cache_resource
def load_translator(run_dir: str):
    import torch

    from labcli.serving.source import load_translator

    torch.set_num_threads(int(os.environ.get("LAB_THREADS", "1")))
    return load_translator(Path(run_dir))


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
