"""`lab serve streamlit` and `lab export space` on one tiny trained newari run: the app translates (Streamlit's
AppTest), the served app answers its health check and stops with `lab serve stop`, the Space folder runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib" / "serving"))

from tiny_run import one_line_error, only_run

from labcli import runs
from labcli.serving import process
from labcli.serving.apps import TRANSLATE
from labcli.serving.clients import fetch_text

FAST = ["train.max_steps=2", "train.batch_size=8", "train.micro_batch_size=8", "train.eval_every=0",
        "train.tensorboard=false", "eval.max_examples=8", "eval.beams=[1]", "eval.baseline=false",
        "vocab_size=600", "max_target_len=8"]


@pytest.fixture(scope="module")
def newari_run(lab_home):
    return runs.prerequisite("finetune", "newari", ["--method", "lora", *FAST], "a tiny translator to serve")


@pytest.mark.slow
def test_streamlit_app_translates(newari_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LAB_RUN_DIR", str(newari_run))
    at = AppTest.from_file(str(TRANSLATE), default_timeout=120).run()
    assert not at.exception
    assert "lora" in at.caption[0].value
    at.text_area(key="source").input("Hello, how are you?")
    at.button(key="go").click().run()
    assert not at.exception
    assert any("Newari" in m.value for m in at.markdown) and len(at.code) == 1


@pytest.mark.slow
def test_serve_streamlit_detached_then_stopped(newari_run, lab_main, lab_home, tmp_path):
    port = process.free_port_block(1)
    out = lab_main("serve", "streamlit", "--run", str(newari_run), "--port", str(port), "--detach")
    assert out.returncode == 0, out.stderr
    name = f"streamlit-{port}"
    pgid = json.loads((lab_home / "serving" / "servers" / f"{name}.json").read_text())["pgid"]
    try:
        summary = json.loads((only_run(tmp_path / "runs") / "summary.json").read_text())
        assert summary["smoke"]["input"] == "How are you?" and isinstance(summary["smoke"]["output"], str)
        assert fetch_text(f"http://127.0.0.1:{port}/_stcore/health") == "ok"
        assert "<title>Streamlit</title>" in fetch_text(f"http://127.0.0.1:{port}/")
    finally:
        assert f"{name}: stopped" in lab_main("serve", "stop", "--name", name).stdout
    assert process.group_pids(pgid) == [] and process.port_free(port)


@pytest.mark.slow
def test_export_space_folder(newari_run, lab_main, tmp_path):
    out = tmp_path / "space"
    assert lab_main("export", "space", "--run", str(newari_run), str(out)).returncode == 0
    assert {p.name for p in out.iterdir()} >= {"app.py", "requirements.txt", "README.md", "model", "run_summary.json"}
    readme = (out / "README.md").read_text()
    assert readme.startswith("---\n") and "sdk: streamlit" in readme and "app_file: app.py" in readme
    assert json.loads((out / "run_summary.json").read_text())["method"] == "lora"
    assert (out / "model" / "config.json").exists() and "transformers>=" in (out / "requirements.txt").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".space")]  # no temporary folder left

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(out / "app.py"), default_timeout=120).run()
    assert not at.exception
    at.button[0].click().run()
    assert not at.exception and any("Newari" in m.value for m in at.markdown)


def test_streamlit_and_space_reject_a_folder_without_a_model(lab_main, tmp_path):
    one_line_error(lab_main("serve", "streamlit", "--run", str(tmp_path)), f"{tmp_path} has no model/config.json")
    one_line_error(lab_main("export", "space", "--run", str(tmp_path), str(tmp_path / "space")), f"{tmp_path} has no model")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "space").exists()
