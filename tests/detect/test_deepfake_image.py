"""`lab detect deepfake-image` through the real CLI (small settings)."""

from __future__ import annotations

import json


def test_spectral_detector_clean_vs_blur(run_lab, tmp_path):
    out = tmp_path / "dfi"
    run_lab("detect", "deepfake-image", "--output", str(out), "patches_per_photo=60", "ae_epochs=20", "cnn_epochs=2")
    s = json.loads((out / "summary.json").read_text())
    rows = {(r["detector"], r["fake type"], r["test condition"]): r for r in s["results"]}
    assert s["real_patches"] > 600 and not set(s["train_photos"]) & set(s["test_photos"])
    assert rows[("spectrum", "transposed", "clean")]["accuracy"] > 0.9
    assert rows[("spectrum", "nearest", "clean")]["accuracy"] > 0.9
    assert rows[("spectrum", "transposed", "blur s=2")]["accuracy"] < 0.65  # the fingerprint is gone after blur
    assert rows[("spectrum", "bilinear", "clean")]["accuracy"] > 0.7  # held-out decoder type
    assert {r["detector"] for r in s["results"]} == {"spectrum", "dct", "cnn"}
    assert all(0 <= r["eer"] <= 1 for r in s["results"])
    for name in ("radial_spectrum.png", "examples.png", "report.md"):
        assert (out / name).stat().st_size > 0


def test_unknown_decoder_is_one_line(run_lab):
    proc = run_lab("detect", "deepfake-image", "heldout_decoders=[stylegan]", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: unknown decoder 'stylegan'"), proc.stderr
