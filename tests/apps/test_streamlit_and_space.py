"""The Streamlit translation app (AppTest) and the Spaces export, on a tiny trained newari run."""

import json
import os
from pathlib import Path

import pytest

FAST = ["train.max_steps=2", "train.batch_size=8", "train.micro_batch_size=8", "train.eval_every=0",
        "train.tensorboard=false", "eval.max_examples=8", "eval.beams=[1]", "eval.baseline=false",
        "vocab_size=600", "max_target_len=8"]


@pytest.fixture(scope="module")
def newari_run(tmp_path_factory, lab_home):
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("newari") / "run"
    proc = subprocess.run([sys.executable, "-m", "labcli", "finetune", "newari", "--method", "lora", *FAST,
                           "--output", str(out)], capture_output=True, text=True, env={**os.environ, "LAB_HOME": str(lab_home)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_streamlit_app_translates(newari_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LAB_RUN_DIR", str(newari_run))
    app_file = Path(__file__).resolve().parents[2] / "labcli" / "serving" / "apps" / "streamlit_translate.py"
    at = AppTest.from_file(str(app_file), default_timeout=120).run()
    assert not at.exception
    assert "lora" in at.caption[0].value
    at.text_area(key="source").input("Hello, how are you?")
    at.button(key="go").click().run()
    assert not at.exception
    assert any("Newari" in m.value for m in at.markdown) and len(at.code) == 1


def test_export_space_folder(newari_run, run_lab, tmp_path):
    out = tmp_path / "space"
    run_lab("export", "space", "--run", str(newari_run), str(out))
    assert {p.name for p in out.iterdir()} >= {"app.py", "requirements.txt", "README.md", "model", "run_summary.json"}
    readme = (out / "README.md").read_text()
    assert readme.startswith("---\n") and "sdk: streamlit" in readme and "app_file: app.py" in readme
    assert json.loads((out / "run_summary.json").read_text())["method"] == "lora"
    assert (out / "model" / "config.json").exists() and "transformers>=" in (out / "requirements.txt").read_text()

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(out / "app.py"), default_timeout=120).run()
    assert not at.exception
    at.button[0].click().run()
    assert not at.exception and any("Newari" in m.value for m in at.markdown)


def test_streamlit_serve_rejects_a_folder_without_a_model(run_lab, tmp_path):
    proc = run_lab("serve", "streamlit", "--run", str(tmp_path), check=False)
    assert proc.returncode == 2 and "has no model/config.json" in proc.stderr and "Traceback" not in proc.stderr
