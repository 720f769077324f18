"""Streamlit apps, run as scripts. This folder lands on sys.path when they run, so it holds
only the apps: a module here named like a package (triton, onnx) would shadow it."""

from pathlib import Path

TRANSLATE = Path(__file__).parent / "streamlit_translate.py"  # `lab serve streamlit`
SPACE = Path(__file__).parent / "space_app.py"  # `lab export space` copies it as app.py
PAGE = Path(__file__).parent / "newari_page.py"  # the page both apps show (copied beside the Space's app.py)
FONTS = Path(__file__).parent / "fonts"  # Noto Sans Devanagari subset + its licence (copied too)
