"""Streamlit apps, run as scripts. This folder lands on sys.path when they run, so it holds
only the apps: a module here named like a package (triton, onnx) would shadow it."""
