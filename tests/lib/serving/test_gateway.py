"""lab's HTTP front for Triton: which bodies it answers itself (400) and which it forwards byte for byte.

The end-to-end behaviour in front of a real Triton is in tests/recipes/serve/test_triton.py; here a
real upstream HTTP server on a loopback port records what the front forwards.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from labcli.serving.clients import post
from labcli.serving.gateway import Gateway, request_problem

V2 = json.dumps({"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]}]}).encode()


@pytest.mark.parametrize("body, headers, problem", [
    (b'{"inputs": [', {}, "not valid JSON"),
    (b"\xff\xfe", {}, "not valid JSON"),
    (b"", {}, "not valid JSON"),
    (b"[1]", {}, "JSON object"),
    (b"{}", {}, "non-empty list"),
    (b'{"inputs": []}', {}, "non-empty list"),
    (b'{"inputs": [3]}', {}, "non-empty list"),
    (V2, {"Inference-Header-Content-Length": "x"}, "Inference-Header-Content-Length"),
    (V2, {"Inference-Header-Content-Length": str(len(V2) + 1)}, "Inference-Header-Content-Length"),
    (V2 + b"\x00\x01", {"Inference-Header-Content-Length": str(len(V2) - 1)}, "not valid JSON"),
])
def test_malformed_bodies_are_named(body, headers, problem):
    assert problem in request_problem("/v2/models/m/infer", headers, body)


@pytest.mark.parametrize("path, body, headers", [
    ("/v2/models/m/infer", V2, {}),
    ("/v2/models/m/versions/1/infer", V2 + b"\x00\x01\x02", {"Inference-Header-Content-Length": str(len(V2))}),
    ("/v2/repository/index", b"not json, not an infer call", {}),
])
def test_valid_or_other_requests_pass(path, body, headers):
    assert request_problem(path, headers, body) is None


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Recorder.seen.append((self.path, body, self.headers.get("Inference-Header-Content-Length")))
        data = b'{"outputs": []}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Upstream", "yes")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def serve(handler) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_front_forwards_bytes_and_answers_bad_json_itself(monkeypatch):
    upstream = serve(Recorder)
    monkeypatch.setattr(Gateway, "upstream", upstream.server_address[:2])
    front = serve(Gateway)
    url = f"http://127.0.0.1:{front.server_address[1]}/v2/models/m/infer"
    try:
        binary = V2 + bytes(range(256))
        assert post(url, binary, {"Inference-Header-Content-Length": str(len(V2))}) == (200, '{"outputs": []}')
        assert Recorder.seen == [("/v2/models/m/infer", binary, str(len(V2)))]
        status, text = post(url, b'{"inputs": [')
        assert status == 400 and "not valid JSON" in json.loads(text)["error"]
        assert len(Recorder.seen) == 1  # never reached the upstream
        upstream.shutdown()
        upstream.server_close()
        status, text = post(url, V2)
        assert status == 502 and "did not answer" in json.loads(text)["error"]
    finally:
        front.shutdown()


class HangsUp(BaseHTTPRequestHandler):
    """Reads the whole POST (it reached the server, which may have run it), then closes without answering."""

    protocol_version = "HTTP/1.1"
    seen: list = []

    def do_POST(self):
        HangsUp.seen.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.close_connection = True

    def log_message(self, *args):
        pass


class AnswersThenCloses(BaseHTTPRequestHandler):
    """Answers as HTTP/1.1 keep-alive, then closes the idle connection (as a server restarting or timing out does)."""

    protocol_version = "HTTP/1.1"
    seen: list = []

    def do_POST(self):
        AnswersThenCloses.seen.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
        self.close_connection = True  # no `Connection: close` header: the front learns it only from the socket


def test_a_post_that_reached_the_upstream_is_never_sent_twice(monkeypatch):
    upstream = serve(HangsUp)
    monkeypatch.setattr(Gateway, "upstream", upstream.server_address[:2])
    front = serve(Gateway)
    url = f"http://127.0.0.1:{front.server_address[1]}/v2/models/m/infer"
    try:
        status, text = post(url, V2)
        assert HangsUp.seen == [V2]  # one delivery, no retry
        assert status == 502 and "not retried" in json.loads(text)["error"]
    finally:
        front.shutdown()
        upstream.shutdown()


def test_an_upstream_connection_closed_while_idle_is_replaced_before_sending(monkeypatch):
    import http.client

    upstream = serve(AnswersThenCloses)
    monkeypatch.setattr(Gateway, "upstream", upstream.server_address[:2])
    front = serve(Gateway)
    conn = http.client.HTTPConnection(*front.server_address[:2], timeout=10)  # one kept-alive client connection
    try:
        for _ in range(3):
            conn.request("POST", "/v2/models/m/infer", body=V2, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"{}")
            time.sleep(0.05)  # let the upstream's close arrive while the connection is idle
        assert AnswersThenCloses.seen == [V2] * 3
    finally:
        conn.close()
        front.shutdown()
        upstream.shutdown()
