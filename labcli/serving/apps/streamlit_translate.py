"""The Streamlit translation app for a `lab finetune newari` run (`lab serve streamlit --run DIR`).

The run folder comes from LAB_RUN_DIR, torch threads from LAB_THREADS. The page is newari_page.py
(shared with the exported Space); the model decodes exactly as the run's evaluation did
(labcli.serving.decoding), and the scores shown are the run's for that decoding.
"""

import os
from pathlib import Path

import streamlit as st
from newari_page import page

RUN = Path(os.environ.get("LAB_RUN_DIR", "."))


@st.cache_resource
def load_translator(run_dir: str):
    import torch

    from labcli.serving.source import load_translator

    torch.set_num_threads(int(os.environ.get("LAB_THREADS", "1")))
    return load_translator(Path(run_dir))


translator = load_translator(str(RUN))
page(translator.translate, translator.card())
