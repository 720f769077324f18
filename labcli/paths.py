"""Where lab keeps caches and runs. Everything lives under one LAB_HOME (default ~/.cache/lab)."""

from __future__ import annotations

import os
from pathlib import Path


def lab_home() -> Path:
    return Path(os.environ.get("LAB_HOME", Path.home() / ".cache" / "lab")).expanduser()


def runs_root() -> Path:
    """Default parent of run directories: ./runs, or $LAB_RUNS."""
    return Path(os.environ.get("LAB_RUNS", "runs"))


def setup_cache_env() -> None:
    """Point the Hugging Face, inductor and Triton caches under LAB_HOME unless the user set them."""
    home = lab_home()
    os.environ.setdefault("HF_HOME", str(home / "hf"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(home / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(home / "triton"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Offline by default: hub ids resolve only from the cache unless LAB_ONLINE=1.
    if os.environ.get("LAB_ONLINE", "0") not in ("1", "true", "yes"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

