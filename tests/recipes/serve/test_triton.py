"""`lab serve triton` end to end on the CPU, one real server for the whole file: `lab serve triton` in the
foreground (a subprocess, as a user runs it) with lab's HTTP front (its default), text and logits over HTTP and gRPC equal
eager, dynamic batching forms batches under concurrent load (Triton's own counters), malformed requests
get 4xx, and Ctrl-C leaves no process. The one-line errors run in-process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib" / "serving"))

from kserve_fuzz import FUZZ
from tiny_run import one_line_error, only_run

from labcli.serving import process
from labcli.serving.clients import TritonClient, post
from labcli.serving.decoding import plain
from labcli.serving.export import SAMPLE_TEXTS, TOLERANCE, eager_generate, eager_logits
from labcli.serving.triton import batch_counts

TEXTS = SAMPLE_TEXTS + ["i like tea", "see you tomorrow"]


@pytest.fixture(scope="module")
def served(seq2seq_run, lab_home, tmp_path_factory):
    """(summary, port, pgid, lab process) of `lab serve triton --gateway` running in the foreground."""
    cwd = tmp_path_factory.mktemp("triton")
    port = process.free_port_block(4)
    env = {**os.environ, "LAB_HOME": str(lab_home), "LAB_RUNS": str(cwd / "runs"), "PYTHONUNBUFFERED": "1"}
    lab = subprocess.Popen([sys.executable, "-m", "labcli", "serve", "triton", "--run", str(seq2seq_run), "--port", str(port),
                            "--gateway", "max_new_tokens=12"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env, cwd=cwd)
    lines = [lab.stdout.readline()]
    while lines[-1] and "press Ctrl-C" not in lines[-1]:  # until it says it is serving (or exits)
        lines.append(lab.stdout.readline())
    assert "press Ctrl-C" in lines[-1], "".join(lines)
    summary = json.loads((only_run(cwd / "runs") / "summary.json").read_text())
    pgid = json.loads((lab_home / "serving" / "servers" / f"triton-{port}.json").read_text())["pgid"]
    yield summary, port, pgid, lab, "".join(lines)
    if lab.poll() is None:  # a failed test before the Ctrl-C one: stop it anyway
        lab.send_signal(signal.SIGINT)
        lab.wait(timeout=60)


def v2(inputs: list[dict]) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


def tensor(values, shape=None, dtype="BYTES", name="TEXT") -> dict:
    return {"name": name, "shape": shape or [len(values), 1], "datatype": dtype, "data": values}


@pytest.mark.slow
def test_smoke_and_repository(served):
    summary, port, _, _, out = served
    assert summary["smoke"]["http"]["text_match"] and summary["smoke"]["grpc"]["text_match"]
    assert summary["gateway"] and summary["endpoints"]["triton_http"] == f"http://127.0.0.1:{port + 3}"
    config = (Path(summary["repository"]) / summary["models"]["text"] / "config.pbtxt").read_text()
    assert "dynamic_batching" in config and "max_batch_size: 16" in config and "KIND_CPU" in config
    assert "smoke http" in out and "matches eager: True" in out


@pytest.mark.slow
def test_text_and_logits_over_http_and_grpc_equal_eager(served, eager_seq2seq):
    summary = served[0]
    model, tokenizer = eager_seq2seq
    text_model, logits_model = summary["models"]["text"], summary["models"]["logits"]
    expected = eager_generate(model, tokenizer, TEXTS, plain("seq2seq", 12))
    for protocol in ("http", "grpc"):  # one request holding a batch of texts
        client = TritonClient(summary["endpoints"], protocol)
        assert client.text(text_model, TEXTS) == expected
        client.close()
    ids = np.random.default_rng(1).integers(5, model.config.vocab_size, size=(3, 7)).astype(np.int64)  # a shape never exported
    arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids), "decoder_input_ids": ids[:, :4].copy()}
    client = TritonClient(summary["endpoints"], "grpc")
    served_logits = client.logits(logits_model, arrays)
    client.close()
    assert np.abs(served_logits - eager_logits(model, ids, arrays["attention_mask"], arrays["decoder_input_ids"])).max() <= TOLERANCE


def counts_reaching(metrics: str, model: str, inference_count: float, timeout: float = 30.0) -> dict[str, float]:
    """Triton's batch counters once inference_count has reached `inference_count` (its metrics lag)."""
    import time

    deadline = time.monotonic() + timeout
    while (counts := batch_counts(metrics, model))["inference_count"] < inference_count and time.monotonic() < deadline:
        time.sleep(0.2)
    return counts


@pytest.mark.slow
def test_dynamic_batching_forms_batches_under_concurrent_load(served, eager_seq2seq):
    """16 concurrent one-text requests: Triton executes the model fewer times than it serves inputs
    (nv_inference_exec_count < nv_inference_count), and every answer equals the one-by-one answer."""
    summary = served[0]
    model, tokenizer = eager_seq2seq
    text_model = summary["models"]["text"]
    expected = eager_generate(model, tokenizer, TEXTS, plain("seq2seq", 12))
    client = TritonClient(summary["endpoints"], "grpc")
    metrics = summary["endpoints"]["metrics"]
    served_before = batch_counts(metrics, text_model)["inference_count"]
    client.text(text_model, TEXTS[:1])  # connection up before the window
    # Triton refreshes its metrics every couple of seconds: wait until they count the warm-up request
    before = counts_reaching(metrics, text_model, served_before + 1)
    answers = [None] * 16
    threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, client.text(text_model, [TEXTS[i % len(TEXTS)]])[0]))
               for i in range(16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    after = counts_reaching(metrics, text_model, before["inference_count"] + 16)
    client.close()
    assert answers == [expected[i % len(TEXTS)] for i in range(16)]
    inputs = after["inference_count"] - before["inference_count"]
    executions = after["inference_exec_count"] - before["inference_exec_count"]
    assert inputs == 16 and executions < inputs, (inputs, executions)


@pytest.mark.slow
def test_malformed_requests_get_4xx_and_unparsable_json_a_400_from_the_front(served):
    summary, port, _, _, _ = served
    text_model, logits_model = summary["models"]["text"], summary["models"]["logits"]
    front, direct = f"http://127.0.0.1:{port}/v2/models", f"{summary['endpoints']['triton_http']}/v2/models"
    bad = {  # the served model answers these itself, with or without the front
        "empty text": (text_model, v2([tensor([""])])),
        "oversized text": (text_model, v2([tensor(["word " * 2000])])),
        "wrong dtype": (text_model, v2([tensor([1], dtype="INT64")])),
        "missing input": (logits_model, v2([tensor([1, 2], [1, 2], "INT64", "input_ids")])),
        "wrong shape": (text_model, v2([tensor(["a", "b"], [1, 2])])),
        "ids out of range": (logits_model, v2([tensor([5, 10**6], [1, 2], "INT64", n)
                                               for n in ("input_ids", "attention_mask", "decoder_input_ids")])),
    }
    for what, (target, body) in bad.items():
        for url in (front, direct):
            status, text = post(f"{url}/{target}/infer", body)
            assert 400 <= status < 500 and "error" in text, (what, url, status, text)
    not_v2 = {"unparsable JSON": b'{"inputs": [', "not an object": b"[1, 2]", "no inputs": b"{}",
              "inputs not a list": b'{"inputs": 5}', "empty body": b"",
              "binary header too long": (b"{}", {"Inference-Header-Content-Length": "99"})}
    for what, body in not_v2.items():
        body, headers = body if isinstance(body, tuple) else (body, {})
        status, text = post(f"{front}/{text_model}/infer", body, headers)
        assert status == 400 and "error" in json.loads(text), (what, status, text)
    # what Triton 2.51 itself does with a body that is not JSON (documented in the recipe and docs/results/serve.md)
    status, text = post(f"{direct}/{text_model}/infer", b'{"inputs": [')
    assert status == 500 and "failed to parse the request JSON buffer" in text, (status, text)
    assert TritonClient(summary["endpoints"], "http").text(text_model, TEXTS[:1])  # still serving


@pytest.mark.slow
def test_kserve_fuzz_list_gets_4xx_from_the_front_and_the_server_stays_healthy(served):
    """Issue 23: every body of the fuzz list (wrong counts, nested arrays, wrong datatypes, huge shapes, negative
    dims, unknown inputs, ...) gets a 4xx with a message through lab's front, which `lab serve triton` puts on
    --port by default. Triton 2.51 on its own port answers many of them with 500 (asserted below for two), and an
    INT64 tensor of shape [1, 10**15] aborts it (seen by hand, 2026-11; not sent here, it would end the server)."""
    summary, port, _, _, _ = served
    front, direct = f"http://127.0.0.1:{port}/v2/models", f"{summary['endpoints']['triton_http']}/v2/models"
    triton_says = {}
    for what, kind, body, words in FUZZ:
        url = f"/{summary['models'][kind]}/infer"
        status, text = post(front + url, json.dumps(body).encode())
        assert 400 <= status < 500 and words in json.loads(text)["error"], (what, status, text)
        if what != "huge free dimension":
            triton_says[what] = post(direct + url, json.dumps(body).encode())[0]
    assert triton_says["logits: fewer ids than the shape"] == 500 and triton_says["negative dimension"] == 500
    assert process.http_ok(f"http://127.0.0.1:{port}/v2/health/ready")
    assert TritonClient(summary["endpoints"], "http").text(summary["models"]["text"], TEXTS[:1])  # still serving


@pytest.mark.slow
def test_user_errors_in_process(served, seq2seq_run, lab_main, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line_error(lab_main("serve", "triton", "--run", str(seq2seq_run), "--port", str(port)), f"port {port}")
    one_line_error(lab_main("serve", "triton", "--run", str(tmp_path / "nope")), "run folder not found")
    assert not (tmp_path / "runs").exists()
    docker = lab_main("serve", "triton", "--run", str(seq2seq_run), "--launcher", "docker", "--dry-run", "--gateway",
                      "--port", "8500", "max_new_tokens=12")
    assert docker.returncode == 0 and "docker run" in docker.stdout and "nvcr.io/nvidia/tritonserver" in docker.stdout
    assert "127.0.0.1:8503:8000" in docker.stdout and "/models" in docker.stdout  # Triton's HTTP behind lab's front
    assert "serving/gateway.py --listen=127.0.0.1:8500 --upstream=127.0.0.1:8503 -- docker run" in docker.stdout


@pytest.mark.slow
def test_ctrl_c_stops_triton_and_the_front(served):
    """Last in this file: SIGINT to `lab serve triton` ends the whole process group and frees the ports."""
    _, port, pgid, lab, _ = served
    assert process.group_pids(pgid)
    lab.send_signal(signal.SIGINT)
    lab.wait(timeout=60)
    rest = lab.stdout.read()
    assert lab.returncode == 0 and "no process left" in rest, rest
    assert process.group_pids(pgid) == [] and all(process.port_free(p) for p in (port, port + 1, port + 2, port + 3))
