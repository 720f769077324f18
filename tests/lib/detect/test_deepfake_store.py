"""labcli/detect/deepfake_store.py: the served detector's choice, and a save/load/score round trip (image kind)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from labcli.detect import deepfake_store
from labcli.errors import UserError


def test_choose_best_takes_mean_validation_auc_then_eer_then_order():
    rows = [{"detector": "a", "auc": 0.9, "eer": 0.1}, {"detector": "a", "auc": 1.0, "eer": 0.0},
            {"detector": "b", "auc": 0.96, "eer": 0.05}, {"detector": "b", "auc": 0.96, "eer": 0.05},
            {"detector": "c", "auc": 0.95, "eer": 0.01}]
    assert deepfake_store.choose_best(rows) == "b"
    tie = [{"detector": "x", "auc": 1.0, "eer": 0.02}, {"detector": "y", "auc": 1.0, "eer": 0.0}, {"detector": "z", "auc": 1.0, "eer": 0.0}]
    assert deepfake_store.choose_best(tie) == "y"


def test_saved_detectors_score_a_file_like_the_run(tmp_path):
    from PIL import Image

    from labcli.detect import image

    rng = np.random.default_rng(0)
    real = rng.random((40, 32, 32)).astype(np.float32)
    smooth = np.stack([np.kron(r[::2, ::2], np.ones((2, 2))) for r in real])  # nearest-neighbour up-sampled "fakes"
    X, y = np.concatenate([real, smooth]), np.r_[np.zeros(40), np.ones(40)]
    detectors = {name: image.make_detector(name, cnn_epochs=1, seed=0).fit(X, y) for name in ("spectrum", "dct")}
    deepfake_store.save(tmp_path, "image", detectors, "dct", {"patch": 32, "threshold": 0.5})
    meta, loaded = deepfake_store.load(tmp_path / deepfake_store.FOLDER)
    assert meta["best"] == "dct" and set(loaded) == {"spectrum", "dct"}
    buf = io.BytesIO()
    Image.fromarray((smooth[0] * 255).round().astype(np.uint8)).save(buf, format="PNG")
    tiles = image.decode(buf.getvalue())
    assert deepfake_store.score_bytes(meta, loaded, buf.getvalue()) == image.score(detectors, tiles)


def test_unknown_kind_and_missing_folder_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown detector kind 'audio'"):
        deepfake_store.library("audio")
    with pytest.raises(UserError, match="holds no readable detector.json"):
        deepfake_store.load(tmp_path)
