"""`lab detect deepfake-image` (slow, small settings) and its one-line errors (fast, in-process)."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.slow
def test_detectors_clean_vs_blur_and_the_served_choice(run_lab, tmp_path):
    from labcli.detect import deepfake_store

    out = tmp_path / "dfi"
    stdout = run_lab("detect", "deepfake-image", "--output", str(out), "patches_per_photo=60", "ae_epochs=20", "cnn_epochs=2").stdout
    s = json.loads((out / "summary.json").read_text())
    rows = {(r["detector"], r["real source"], r["fake type"], r["test condition"]): r for r in s["results"]}
    train, val, test = set(s["train_photos"]), set(s["val_photos"]), set(s["test_photos"])
    assert s["face_patches"] == 60 and not train & (val | test) and not val & test
    assert rows[("spectrum", "photos", "transposed", "clean")]["accuracy"] > 0.9
    assert rows[("spectrum", "photos", "transposed", "blur s=2")]["accuracy"] < 0.65  # the fingerprint is gone after blur
    assert rows[("spectrum", "photos", "bilinear", "clean")]["accuracy"] > 0.7  # held-out decoder type
    assert {r["real source"] for r in s["results"]} == {"photos", "lfw faces"}
    # the served detector is chosen on the validation photos with the training decoders only
    assert {(r["detector"], r["fake type"]) for r in s["validation"]} == {(d, f) for d in ("spectrum", "dct", "cnn")
                                                                        for f in ("transposed", "nearest")}
    assert s["best_detector"] == deepfake_store.choose_best(s["validation"]) and "served by default" in stdout
    meta, detectors = deepfake_store.load(out / "detector")
    assert meta["kind"] == "image" and meta["best"] == s["best_detector"] and len(s["examples"]) == 4
    for example in s["examples"]:  # what `lab serve detector` serves gives the run's own scores for its example files
        got = deepfake_store.score_bytes(meta, detectors, (out / example["file"]).read_bytes())
        assert np.allclose([got[k] for k in example["scores"]], list(example["scores"].values()), rtol=0, atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["heldout_decoders=[stylegan]"], "key 'heldout_decoders.0' has bad value 'stylegan'"),
    (["val_photos=[gravel]"], "a photo is in more than one of train_photos, val_photos, test_photos"),
])
def test_bad_settings_are_one_line_and_leave_no_run(lab_main, tmp_path, args, message):
    proc = lab_main("detect", "deepfake-image", *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


def test_unreadable_image_is_one_line(lab_main, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    proc = lab_main("detect", "deepfake-image", "score_file=broken.png")
    assert proc.returncode == 2 and proc.stderr.startswith("error: cannot read image file broken.png"), proc.stderr
    assert not (tmp_path / "runs").exists()
