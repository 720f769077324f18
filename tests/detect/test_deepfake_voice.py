"""`lab detect deepfake-voice` through the real CLI. Needs the Debian packages that
labcli/detect/setup_audio.sh installs (the Makefile runs it); skipped only where that script could not run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

HAVE_AUDIO = Path("/usr/share/asterisk/sounds/en/activated.wav").is_file() and shutil.which("espeak-ng") is not None
needs_audio = pytest.mark.skipif(not HAVE_AUDIO, reason="asterisk-core-sounds-en-wav/espeak-ng missing: labcli/detect/setup_audio.sh failed or was not run")


@needs_audio
def test_voice_detectors_on_real_prompts(run_lab, tmp_path):
    out = tmp_path / "dfv"
    real = "/usr/share/asterisk/sounds/en/activated.wav"
    run_lab("detect", "deepfake-voice", "--output", str(out), "max_prompts=16", "griffin_lim_iters=4", "gmm_components=4", "cnn_epochs=2",
            f"score_file={real}")
    s = json.loads((out / "summary.json").read_text())
    assert s["prompts"] == 16 and s["test_prompts"] == 5
    rows = {(r["detector"], r["fake type"], r["test condition"]): r for r in s["results"]}
    assert rows[("lfcc-logistic", "espeak", "clean")]["auc"] > 0.9  # TTS is the easy case
    assert rows[("lfcc-logistic", "world", "clean")]["seen in training"] == "held-out"
    assert all(0 <= r["eer"] <= 1 and 0 <= r["auc"] <= 1 for r in s["results"])
    assert set(s["scored_file"]) == {"file", "lfcc-logistic", "lfcc-gmm", "lfcc-cnn"}
    assert (out / "lfcc_means.png").exists() and "synthetic" in (out / "report.md").read_text()


def test_unreadable_audio_is_one_line(run_lab, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    proc = run_lab("detect", "deepfake-voice", f"score_file={bad}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"error: cannot read audio file {bad}"), proc.stderr
