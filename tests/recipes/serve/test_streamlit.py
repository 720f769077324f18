"""`lab serve streamlit` and `lab export space` on one tiny trained newari run: the app translates (Streamlit's
AppTest), the served app answers its health check and stops with `lab serve stop`, the Space folder runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib" / "serving"))

from tiny_run import one_line_error, only_run

from labcli import runs
from labcli.serving import process
from labcli.serving.apps import TRANSLATE
from labcli.serving.clients import fetch_text
from labcli.serving.source import DEFAULT_TRANSLATION_RUN


@pytest.fixture(scope="module")
def newari_run(lab_home):
    """The default run the serve recipes use without --run (shared with the walk and browser tests)."""
    return runs.prerequisite("finetune", "newari", DEFAULT_TRANSLATION_RUN, "no --run given: serving the default newari run")


def evaluated_example(run: Path) -> dict:
    """A test sentence the run's evaluation translated into Devanagari (errors.jsonl: src, hyp), the app's reference."""
    rows = [json.loads(line) for line in (run / "errors.jsonl").read_text(encoding="utf-8").splitlines()]
    return next(r for r in rows if any("\u0900" <= c <= "\u097f" for c in r["hyp"]))


@pytest.mark.slow
def test_streamlit_app_translates_as_the_run_evaluated(newari_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LAB_RUN_DIR", str(newari_run))
    summary = json.loads((newari_run / "summary.json").read_text())
    at = AppTest.from_file(str(TRANSLATE), default_timeout=120).run()
    assert not at.exception
    assert "full" in at.caption[0].value
    overall = summary["scores"]["greedy"]["by_domain"]["all"]
    assert [m.value for m in at.metric] == [str(overall[k]) for k in ("bleu", "chrf++", "ter")]
    example = evaluated_example(newari_run)
    at.text_area(key="source").input(example["src"])
    at.button[0].click().run()
    assert not at.exception and len(at.code) == 1
    assert at.code[0].value == example["hyp"]  # what the run's own evaluation decoded for this test sentence
    at.text_area(key="source").input("   ")
    at.button[0].click().run()
    from labcli.serving.apps.newari_page import EMPTY

    assert not at.exception and not at.code and at.info[0].value == EMPTY


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
        assert summary["smoke"]["decoding"].startswith("greedy")
        assert fetch_text(f"http://127.0.0.1:{port}/_stcore/health") == "ok"
        assert "<title>Streamlit</title>" in fetch_text(f"http://127.0.0.1:{port}/")
    finally:
        assert f"{name}: stopped" in lab_main("serve", "stop", "--name", name).stdout
    assert process.group_pids(pgid) == [] and process.port_free(port)


@pytest.mark.slow
def test_export_space_folder(newari_run, lab_main, tmp_path):
    out = tmp_path / "space"
    assert lab_main("export", "space", "--run", str(newari_run), str(out)).returncode == 0
    assert {p.name for p in out.iterdir()} >= {"app.py", "newari_page.py", "fonts", "decoding.json", "requirements.txt",
                                               "README.md", "model", "run_summary.json"}
    assert (out / "fonts" / "LICENSE.OFL-1.1.txt").exists()
    evaluated = yaml.safe_load((newari_run / "config.yaml").read_text())["eval"]
    assert json.loads((out / "decoding.json").read_text())["generate"]["no_repeat_ngram_size"] == evaluated["no_repeat_ngram_size"]
    readme = (out / "README.md").read_text()
    assert readme.startswith("---\n") and "sdk: streamlit" in readme and "app_file: app.py" in readme
    assert json.loads((out / "run_summary.json").read_text())["method"] == "full"
    assert "huggingface-cli" not in readme
    assert (out / "model" / "config.json").exists() and "transformers>=" in (out / "requirements.txt").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".space")]  # no temporary folder left

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(out / "app.py"), default_timeout=120).run()
    assert not at.exception
    example = evaluated_example(newari_run)
    at.text_area(key="source").input(example["src"])
    at.button[0].click().run()
    assert not at.exception and at.code[0].value == example["hyp"]  # the Space decodes as the run's evaluation did


def test_streamlit_and_space_reject_a_folder_without_a_model(lab_main, tmp_path):
    one_line_error(lab_main("serve", "streamlit", "--run", str(tmp_path)), f"{tmp_path} has no model/config.json")
    one_line_error(lab_main("export", "space", "--run", str(tmp_path), str(tmp_path / "space")), f"{tmp_path} has no model")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "space").exists()
