"""`lab serve torchserve` end to end on the CPU, one real server for the file: token auth, served text equals
eager, malformed requests get 400 and the server keeps serving, `lab serve stop` leaves no process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib" / "serving"))

from tiny_run import only_run

from labcli.serving import process
from labcli.serving.clients import fetch_text, post, post_json
from labcli.serving.decoding import plain
from labcli.serving.export import SAMPLE_TEXTS, eager_generate

TEXTS = SAMPLE_TEXTS + ["i like tea", "see you tomorrow"]


@pytest.mark.slow
def test_torchserve_end_to_end(lab_main, seq2seq_run, eager_seq2seq, lab_home, tmp_path):
    port = process.free_port_block(5)
    out = lab_main("serve", "torchserve", "--run", str(seq2seq_run), "--port", str(port), "--detach", "max_new_tokens=12")
    assert out.returncode == 0, out.stderr
    name = f"torchserve-{port}"
    pgid = json.loads((lab_home / "serving" / "servers" / f"{name}.json").read_text())["pgid"]
    try:
        run = only_run(tmp_path / "runs")
        summary = json.loads((run / "summary.json").read_text())
        assert summary["token_auth"] and summary["smoke"]["text_match"], out.stdout
        assert "running in the background" in out.stdout and out.stdout.count("run folder:") == 1
        props = (run / "config.properties").read_text()
        assert all(f"{k}=http://127.0.0.1:" in props for k in ("inference_address", "management_address", "metrics_address"))
        keys = json.loads((run / "key_file.json").read_text())
        auth = {"Authorization": f"Bearer {keys['inference']['key']}"}
        predict = summary["endpoints"]["predict"]
        model, tokenizer = eager_seq2seq
        expected = eager_generate(model, tokenizer, TEXTS, plain("seq2seq", 12))
        for text, want in zip(TEXTS, expected):
            status, body = post_json(predict, {"text": text}, auth)
            assert status == 200 and json.loads(body) == {"text": want}
        assert post_json(predict, {"text": TEXTS[0]})[0] in (400, 401)  # no token
        bad = {"bad JSON": b'{"text": ', "no text": b'{"txt": "x"}', "empty": b'{"text": ""}',
               "not a string": b'{"text": 5}', "oversized": json.dumps({"text": "word " * 2000}).encode()}
        for what, body in bad.items():
            status, text = post(predict, body, auth)
            assert status == 400 and "error" in json.loads(text), (what, status, text)
        status, body = post_json(predict, {"text": TEXTS[1]}, auth)
        assert status == 200 and json.loads(body)["text"] == expected[1]
        assert "ts_inference_requests_total" in fetch_text(summary["endpoints"]["metrics"])
    finally:
        stop = lab_main("serve", "stop", "--name", name)
        assert f"{name}: stopped" in stop.stdout
        assert process.group_pids(pgid) == [], "server processes left behind"
        assert not (lab_home / "serving" / "servers" / f"{name}.json").exists()
