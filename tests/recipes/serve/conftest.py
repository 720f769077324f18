"""The tiny seq2seq / causal-lm runs (tests/lib/serving/tiny_run.py) as fixtures for these tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib" / "serving"))

from tiny_run import causal_run, eager_seq2seq, seq2seq_run  # noqa: F401  (fixtures)
