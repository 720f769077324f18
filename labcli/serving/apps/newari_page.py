"""The English -> Newari page both apps show: `lab serve streamlit` and the Space made by `lab export space`.

Needs only streamlit (a Space runs it without labcli; `lab export space` copies this file and fonts/
beside app.py). Newari text is drawn with the shipped Noto Sans Devanagari subset, embedded in the
page, so it renders the same on machines without a Devanagari font (no boxes). A form: the button or
Ctrl+Enter in the text box translates; an empty box gets a message; the output is a code block with
a copy button; the layout holds at a phone's 390 px.
"""

from __future__ import annotations

import base64
from pathlib import Path

import streamlit as st

FONT = Path(__file__).parent / "fonts" / "NotoSansDevanagari-devanagari-400.woff2"
FONT_FAMILY = "Lab Noto Sans Devanagari"
# the subset's own range (@fontsource's index.css): Latin text keeps the page's fonts
UNICODE_RANGE = "U+0900-097F,U+1CD0-1CF9,U+200C-200D,U+20A8,U+20B9,U+20F0,U+25CC,U+A830-A839,U+A8E0-A8FF,U+11B00-11B09"
EMPTY = "Type an English sentence first."


def font_css(font: Path = FONT) -> str:
    """@font-face with the font inlined (no static file serving needed), applied to the page, code blocks included."""
    data = base64.b64encode(font.read_bytes()).decode("ascii")
    return (f"<style>@font-face {{ font-family: '{FONT_FAMILY}'; font-style: normal; font-weight: 400; font-display: block;"
            f" src: url(data:font/woff2;base64,{data}) format('woff2'); unicode-range: {UNICODE_RANGE}; }}\n"
            f"h1, h1 span, p, label, textarea, [data-testid='stMarkdownContainer'] {{ font-family: '{FONT_FAMILY}', "
            f"'Source Sans', 'Source Sans Pro', sans-serif !important; }}\n"
            f"code, pre {{ font-family: '{FONT_FAMILY}', 'Source Code Pro', monospace !important; white-space: pre-wrap !important;"
            f" word-break: break-word; }}</style>")


def page(translate, card: dict) -> None:
    """The whole page. `translate(text) -> str` decodes as the run did; `card` holds what is shown about the run:
    title, caption, scores ({"BLEU": x, "chrF++": y, "TER": z}), scores_note (which test set and decoding)."""
    st.set_page_config(page_title="English → Newari", page_icon="🗣️", layout="centered")
    st.markdown(font_css(), unsafe_allow_html=True)
    st.title("English → Newari (नेपाल भाषा)")
    st.caption(card["caption"])
    cols = st.columns(len(card["scores"]))
    for col, (name, value) in zip(cols, card["scores"].items()):
        col.metric(name, "-" if value is None else value)
    st.caption(card["scores_note"])
    with st.form("translate", border=False):
        text = st.text_area("English", "How are you?", key="source", help="Ctrl+Enter translates")
        submitted = st.form_submit_button("Translate", type="primary")
    if submitted:
        if not text.strip():
            st.info(EMPTY)
        else:
            with st.spinner("translating"):
                out = translate(text.strip())
            st.markdown("**Newari:**")
            st.code(out or "(empty output)", language=None)
