"""Serving end to end on the CPU: ONNX export parity, real Triton and TorchServe servers on free
loopback ports (infer, compare with eager, malformed requests, stop, no process left), the load test.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from labcli.serving import process
from labcli.serving.export import SAMPLE_TEXTS, TOLERANCE, eager_generate, eager_logits

TEXTS = SAMPLE_TEXTS + ["i like tea", "see you tomorrow"]


def one_line_error(proc, starts: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {starts}"), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def only_run(tmp_path: Path) -> Path:
    """The run folder a `run_lab` call created under tmp_path/runs."""
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    return run


def fetch(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read().decode()


def v2(text_or_dtype_inputs: list[dict]) -> bytes:
    return json.dumps({"inputs": text_or_dtype_inputs}).encode()


def text_input(values, shape=None, dtype="BYTES", name="TEXT") -> dict:
    return {"name": name, "shape": shape or [len(values), 1], "datatype": dtype, "data": values}


def assert_stopped(run_lab, name: str, pgid: int, lab_home: Path) -> None:
    out = run_lab("serve", "stop", "--name", name)
    assert f"{name}: stopped" in out.stdout
    assert process.group_pids(pgid) == [], "server processes left behind"
    assert not (lab_home / "serving" / "servers" / f"{name}.json").exists()


# -- ONNX ------------------------------------------------------------------------------------------

def test_serve_onnx_parity_and_latency(run_lab, seq2seq_run, tmp_path):
    out = run_lab("serve", "onnx", "--run", str(seq2seq_run), "repeats=2", "batch=2")
    run = only_run(tmp_path)
    summary = summary_of(run)
    assert summary["parity_ok"] and summary["max_abs_diff"] <= TOLERANCE and summary["text_match"]
    assert (run / "onnx" / "encoder.onnx").is_file() and (run / "onnx" / "decoder.onnx").is_file()
    assert {r["case"] for r in summary["latency"]} == {"logits, batch 1", "logits, batch 2", "greedy text, 1 sentence"}
    assert (run / "latency.png").stat().st_size > 0 and "onnxruntime" in (run / "report.md").read_text()
    assert "text match: True" in out.stdout


def test_onnx_causal_lm_dynamic_axes_match_eager(causal_run):
    """A decoder-only run: logits for a new batch/sequence shape and greedy text equal eager."""
    from labcli.serving.export import export_bundle, load_eager
    from labcli.serving.greedy import OnnxGenerator
    from labcli.serving.source import resolve

    source = resolve(run=str(causal_run))
    bundle = export_bundle(source, max_new_tokens=8)
    model, tokenizer = load_eager(source)
    generator = OnnxGenerator(bundle)
    ids = np.random.default_rng(0).integers(3, model.config.vocab_size, size=(5, 11)).astype(np.int64)
    mask = np.ones_like(ids)
    assert np.abs(generator.logits(ids, mask) - eager_logits(model, ids, mask)).max() <= TOLERANCE
    assert generator.generate(TEXTS) == eager_generate(model, tokenizer, TEXTS, 8)


# -- Triton ----------------------------------------------------------------------------------------

def test_triton_end_to_end(run_lab, seq2seq_run, eager_seq2seq, lab_home, tmp_path):
    from labcli.serving.clients import TritonClient, post

    model, tokenizer = eager_seq2seq
    port = process.free_port_block(4)
    out = run_lab("serve", "triton", "--run", str(seq2seq_run), "--port", str(port), "--detach", "max_new_tokens=12")
    assert "running in the background" in out.stdout
    summary = summary_of(only_run(tmp_path))
    assert summary["smoke"]["http"]["text_match"] and summary["smoke"]["grpc"]["text_match"]
    name, pgid = f"triton-{port}", json.loads((lab_home / "serving" / "servers" / f"triton-{port}.json").read_text())["pgid"]
    text_model, logits_model = summary["models"]["text"], summary["models"]["logits"]
    config = (only_run(tmp_path) / "model_repository" / text_model / "config.pbtxt").read_text()
    assert "dynamic_batching" in config and "max_batch_size: 16" in config and "KIND_CPU" in config
    try:
        expected = eager_generate(model, tokenizer, TEXTS, 12)
        for protocol in ("http", "grpc"):  # text in -> text out, one request holding a batch of texts
            client = TritonClient(summary["endpoints"], protocol)
            assert client.text(text_model, TEXTS) == expected
            client.close()
        # tensor in -> tensor out, a shape the export never saw
        ids = np.random.default_rng(1).integers(5, model.config.vocab_size, size=(3, 7)).astype(np.int64)
        arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids), "decoder_input_ids": ids[:, :4].copy()}
        client = TritonClient(summary["endpoints"], "grpc")
        served = client.logits(logits_model, arrays)
        assert np.abs(served - eager_logits(model, ids, arrays["attention_mask"], arrays["decoder_input_ids"])).max() <= TOLERANCE
        # concurrent single-text requests (dynamic batching) give the same answers as one by one
        answers = [None] * 16
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, client.text(text_model, [TEXTS[i % len(TEXTS)]])[0]))
                   for i in range(16)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert answers == [expected[i % len(TEXTS)] for i in range(16)]
        client.close()

        url = f"http://127.0.0.1:{port}/v2/models"
        bad = {
            "empty text": (text_model, v2([text_input([""])])),
            "oversized text": (text_model, v2([text_input(["word " * 2000])])),
            "wrong dtype": (text_model, v2([text_input([1], dtype="INT64")])),
            "missing input": (logits_model, v2([text_input([1, 2], [1, 2], "INT64", "input_ids")])),
            "wrong shape": (text_model, v2([text_input(["a", "b"], [1, 2])])),
            "ids out of range": (logits_model, v2([text_input([5, 10**6], [1, 2], "INT64", n) for n in
                                                   ("input_ids", "attention_mask", "decoder_input_ids")])),
        }
        for what, (target, body) in bad.items():
            status, text = post(f"{url}/{target}/infer", body)
            assert 400 <= status < 500 and "error" in text, (what, status, text)
        # Requests that are not v2 JSON at all: Triton 2.51 itself would say 500; lab's front says 400.
        not_v2 = {"unparsable JSON": b'{"inputs": [', "not an object": b"[1, 2]", "no inputs": b"{}",
                  "inputs not a list": b'{"inputs": 5}', "empty body": b"", "binary header too long":
                  (b"{}", {"Inference-Header-Content-Length": "99"})}
        for what, body in not_v2.items():
            body, headers = body if isinstance(body, tuple) else (body, {})
            status, text = post(f"{url}/{text_model}/infer", body, headers)
            assert status == 400 and "error" in json.loads(text), (what, status, text)
        assert process.http_ok(f"http://127.0.0.1:{port}/v2/health/ready")
        assert TritonClient(summary["endpoints"], "http").text(text_model, TEXTS[:1]) == expected[:1]
        metrics = fetch(summary["endpoints"]["metrics"])
        assert f'nv_inference_request_success{{model="{text_model}"' in metrics
    finally:
        assert_stopped(run_lab, name, pgid, lab_home)


def test_triton_foreground_ctrl_c_leaves_no_process(seq2seq_run, lab_home, tmp_path):
    import os

    port = process.free_port_block(4)
    env = {**os.environ, "LAB_HOME": str(lab_home), "LAB_RUNS": str(tmp_path / "runs"), "PYTHONUNBUFFERED": "1"}
    lab = subprocess.Popen([sys.executable, "-m", "labcli", "serve", "triton", "--run", str(seq2seq_run), "--port", str(port),
                            "max_new_tokens=12"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = [lab.stdout.readline()]
    while lines[-1] and "press Ctrl-C" not in lines[-1]:  # until the server says it is serving (or lab exits)
        lines.append(lab.stdout.readline())
    assert "press Ctrl-C" in lines[-1], "".join(lines)
    pgid = json.loads((lab_home / "serving" / "servers" / f"triton-{port}.json").read_text())["pgid"]
    assert process.group_pids(pgid)
    lab.send_signal(signal.SIGINT)
    lab.wait(timeout=60)
    rest = lab.stdout.read()
    assert lab.returncode == 0 and "no process left" in rest, "".join(lines) + "|||" + rest
    assert process.group_pids(pgid) == []
    assert process.port_free(port)


def test_triton_user_errors(run_lab, seq2seq_run, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        one_line_error(run_lab("serve", "triton", "--run", str(seq2seq_run), "--port", str(port), check=False), f"port {port}")
    finally:
        busy.close()
    one_line_error(run_lab("serve", "triton", "--run", str(tmp_path / "nope"), check=False), "run folder not found")
    one_line_error(run_lab("serve", "onnx", check=False), "give exactly one of --run DIR or --model")
    one_line_error(run_lab("serve", "stop", "--name", "no-such-server", check=False), "no running server")
    docker = run_lab("serve", "triton", "--run", str(seq2seq_run), "--launcher", "docker", "--dry-run", "--port", "8500")
    assert "docker run" in docker.stdout and "nvcr.io/nvidia/tritonserver" in docker.stdout
    assert "127.0.0.1:8503:8000" in docker.stdout and "/models" in docker.stdout  # Triton's HTTP behind lab's front
    assert "labcli.serving.gateway --listen=127.0.0.1:8500 --upstream=127.0.0.1:8503 -- docker run" in docker.stdout


# -- TorchServe ------------------------------------------------------------------------------------

def test_torchserve_end_to_end(run_lab, seq2seq_run, eager_seq2seq, lab_home, tmp_path):
    from labcli.serving.clients import post, post_json

    model, tokenizer = eager_seq2seq
    port = process.free_port_block(5)
    out = run_lab("serve", "torchserve", "--run", str(seq2seq_run), "--port", str(port), "--detach", "max_new_tokens=12")
    run = only_run(tmp_path)
    summary = summary_of(run)
    name, pgid = f"torchserve-{port}", summary_of(run)["endpoints"] and json.loads(
        (lab_home / "serving" / "servers" / f"torchserve-{port}.json").read_text())["pgid"]
    assert summary["token_auth"] and summary["smoke"]["text_match"], out.stdout
    props = (run / "config.properties").read_text()
    assert all(f"{k}=http://127.0.0.1:" in props for k in ("inference_address", "management_address", "metrics_address"))
    try:
        keys = json.loads((run / "key_file.json").read_text())
        auth = {"Authorization": f"Bearer {keys['inference']['key']}"}
        predict = summary["endpoints"]["predict"]
        expected = eager_generate(model, tokenizer, TEXTS, 12)
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
        assert "ts_inference_requests_total" in fetch(summary["endpoints"]["metrics"])
    finally:
        assert_stopped(run_lab, name, pgid, lab_home)


# -- load test -------------------------------------------------------------------------------------

def test_bench_serve_triton(run_lab, seq2seq_run, tmp_path):
    run_lab("bench", "serve", "--run", str(seq2seq_run), "--protocol", "http",  # HTTP through lab's front, tiny load
            "requests=12", "concurrency=[1,4]", "max_new_tokens=8")
    run = only_run(tmp_path)
    bench = json.loads((run / "bench.json").read_text())
    assert bench["errors"] == 0 and bench["protocol"] == "http"
    assert [(r["batching"], r["concurrency"], r["requests"]) for r in bench["rows"]] == \
        [(True, 1, 12), (True, 4, 12), (False, 1, 12), (False, 4, 12)]
    assert all(r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] for r in bench["rows"])
    assert (run / "bench.png").stat().st_size > 0 and "| on | 4 |" in (run / "report.md").read_text()


def test_torchserve_without_java_says_what_to_install(monkeypatch):
    from labcli.errors import UserError
    from labcli.serving import torchserve

    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(torchserve.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="Java") as err:
        torchserve.java_check()
    assert "openjdk-17" in err.value.hint
