"""`lab detect deepfake-voice` through the real CLI (slow; needs the Debian packages labcli/detect/setup_audio.sh
installs, skipped where that script could not run), and its one-line errors in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

HAVE_AUDIO = (Path("/usr/share/asterisk/sounds/en/activated.wav").is_file() and shutil.which("espeak-ng") is not None
              and shutil.which("c2enc") is not None)
needs_audio = pytest.mark.skipif(not HAVE_AUDIO, reason="asterisk-core-sounds-en-wav/espeak-ng/codec2 missing: labcli/detect/setup_audio.sh failed or was not run")


@pytest.mark.slow
@needs_audio
def test_voice_detectors_on_real_prompts(run_lab, tmp_path):
    from labcli.detect import deepfake_store

    out = tmp_path / "dfv"
    real = "/usr/share/asterisk/sounds/en/activated.wav"
    stdout = run_lab("detect", "deepfake-voice", "--output", str(out), "max_prompts=10", "max_seconds=4", "griffin_lim_iters=4",
                     "gmm_components=2", "cnn_epochs=1", "detectors=[lfcc-gmm,lfcc-cnn,cqcc-logistic]", f"score_file={real}").stdout
    s = json.loads((out / "summary.json").read_text())
    assert (s["prompts"], s["train_prompts"], s["val_prompts"], s["test_prompts"]) == (10, 5, 2, 3)
    rows = {(r["detector"], r["fake type"], r["test condition"]): r for r in s["results"]}
    assert rows[("lfcc-gmm", "espeak", "clean")]["auc"] > 0.9  # TTS is the easy case
    assert rows[("cqcc-logistic", "espeak", "clean")]["auc"] > 0.9
    assert {r["fake type"] for r in s["results"] if r["seen in training"] == "held-out"} == {"mel-griffin-lim", "world", "codec2"}
    assert all(0 <= r["eer"] <= 1 and 0 <= r["auc"] <= 1 for r in s["results"])
    # the served detector is chosen on the validation prompts with the training fakes only
    assert {r["fake type"] for r in s["validation"]} == {"griffin-lim", "espeak"} and len(s["validation"]) == 6
    assert s["best_detector"] == deepfake_store.choose_best(s["validation"]) and "served by default" in stdout
    assert set(s["scored_file"]) == {"file", "lfcc-gmm", "lfcc-cnn", "cqcc-logistic"}
    assert (out / "cepstra_means.png").exists() and "synthetic" in (out / "report.md").read_text()
    # the saved detectors (what `lab serve detector` serves) reload and give the run's own scores for its example files
    meta, detectors = deepfake_store.load(out / "detector")
    assert meta["kind"] == "voice" and meta["best"] == s["best_detector"] and len(s["examples"]) == 6
    for example in s["examples"]:
        got = deepfake_store.score_bytes(meta, detectors, (out / example["file"]).read_bytes())
        assert np.allclose([got[k] for k in example["scores"]], list(example["scores"].values()), rtol=0, atol=1e-6)
    handler_answers_like_the_run(out, s)


class FakeContext:
    """What TorchServe hands a handler: the unpacked model folder and per-request response statuses."""

    def __init__(self, model_dir: Path):
        self.system_properties = {"model_dir": str(model_dir)}
        self.statuses = {}

    def set_response_status(self, code, phrase, idx=0):
        self.statuses[idx] = code


def handler_answers_like_the_run(run_dir: Path, summary: dict) -> None:
    """`lab serve detector`'s TorchServe handler, in-process on the voice run (the real server is tested on an image run
    in tests/serving/test_detector.py): WAV bytes in, the run's scores out; bad files get a 400 in the same batch."""
    from labcli import runs
    from labcli.serving.detector_handler import DetectorHandler

    model_dir = run_dir / "served"
    shutil.copytree(run_dir / "detector", model_dir)
    runs.write_json(model_dir / "serve_meta.json", {"detector": summary["best_detector"], "threshold": 0.5, "max_bytes": 2**20, "threads": 1})
    handler, context = DetectorHandler(), FakeContext(model_dir)
    handler.initialize(context)
    real, fake = summary["examples"][0], summary["examples"][-1]
    rows = [{"body": bytearray((run_dir / real["file"]).read_bytes())}, {"body": bytearray(b"RIFFjunk")}, {"body": bytearray()},
            {"file": bytearray((run_dir / fake["file"]).read_bytes())}]  # the last one as a multipart field
    answers = [json.loads(a) for a in handler.handle(rows, context)]
    assert context.statuses == {1: 400, 2: 400}
    assert "cannot read audio" in answers[1]["error"] and "empty" in answers[2]["error"]
    for answer, example in ((answers[0], real), (answers[3], fake)):
        assert max(abs(answer["scores"][k] - v) for k, v in example["scores"].items()) <= 1e-6
        assert answer["detector"] == summary["best_detector"] and answer["kind"] == "voice"


def test_unreadable_audio_is_one_line(lab_main, tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    proc = lab_main("detect", "deepfake-voice", "score_file=broken.wav")
    assert proc.returncode == 2 and proc.stderr.startswith("error: cannot read audio file broken.wav"), proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, message", [
    (["codec2_mode=9600"], "unknown codec2_mode '9600'"),
    (["train_fakes=[wavenet]"], "key 'train_fakes.0' has bad value 'wavenet'"),
    (["test_fraction=0.5", "val_fraction=0.45"], "leave almost no training prompts"),
])
def test_bad_settings_are_one_line_and_leave_no_run(lab_main, tmp_path, args, message):
    proc = lab_main("detect", "deepfake-voice", *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()
