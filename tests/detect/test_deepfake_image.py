"""`lab detect deepfake-image` through the real CLI (small settings)."""

from __future__ import annotations

import json

import numpy as np


def test_spectral_detector_clean_vs_blur(run_lab, tmp_path):
    from labcli.detect import deepfake_store

    out = tmp_path / "dfi"
    run_lab("detect", "deepfake-image", "--output", str(out), "patches_per_photo=60", "ae_epochs=20", "cnn_epochs=2")
    s = json.loads((out / "summary.json").read_text())
    rows = {(r["detector"], r["real source"], r["fake type"], r["test condition"]): r for r in s["results"]}
    assert s["real_patches"] > 600 and s["face_patches"] == 60 and not set(s["train_photos"]) & set(s["test_photos"])
    assert rows[("spectrum", "photos", "transposed", "clean")]["accuracy"] > 0.9
    assert rows[("spectrum", "photos", "nearest", "clean")]["accuracy"] > 0.9
    assert rows[("spectrum", "photos", "transposed", "blur s=2")]["accuracy"] < 0.65  # the fingerprint is gone after blur
    assert rows[("spectrum", "photos", "bilinear", "clean")]["accuracy"] > 0.7  # held-out decoder type
    assert {r["real source"] for r in s["results"]} == {"photos", "lfw faces"}  # LFW faces: a second, unseen real source
    assert {r["detector"] for r in s["results"]} == {"spectrum", "dct", "cnn"}
    assert all(0 <= r["eer"] <= 1 for r in s["results"])
    for name in ("radial_spectrum.png", "examples.png", "report.md", "detector/detector.json", "detector/cnn.pt",
                 "detector/spectrum.joblib", "examples/real.png"):
        assert (out / name).stat().st_size > 0
    # the saved detectors (what `lab serve detector` serves) reload and give the run's own scores for its example files
    meta, detectors = deepfake_store.load(out / "detector")
    assert meta["kind"] == "image" and meta["best"] == s["best_detector"] and len(s["examples"]) == 4
    for example in s["examples"]:
        got = deepfake_store.score_bytes(meta, detectors, (out / example["file"]).read_bytes())
        assert np.allclose([got[k] for k in example["scores"]], list(example["scores"].values()), rtol=0, atol=1e-6)


def test_unknown_decoder_is_one_line(run_lab):
    proc = run_lab("detect", "deepfake-image", "heldout_decoders=[stylegan]", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: unknown decoder 'stylegan'"), proc.stderr


def test_unreadable_image_is_one_line(run_lab, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    proc = run_lab("detect", "deepfake-image", f"score_file={bad}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"error: cannot read image file {bad}"), proc.stderr
