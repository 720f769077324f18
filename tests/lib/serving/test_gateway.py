"""lab's HTTP front for Triton: which bodies it answers itself (400) and which it forwards byte for byte.

The end-to-end behaviour in front of a real Triton is in tests/recipes/serve/test_triton.py; here a
real upstream HTTP server on a loopback port records what the front forwards.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

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
    """An upstream that records POSTs and declares model `m` as Triton does (TEXT: BYTES [-1, 1], max_batch_size 4)."""

    protocol_version = "HTTP/1.1"
    seen: list = []
    asked: ClassVar[list] = []

    def do_GET(self):
        Recorder.asked.append(self.path)
        answers = {"/v2/models/m": {"name": "m", "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}],
                                    "outputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}]},
                   "/v2/models/m/config": {"max_batch_size": 4}}
        data = json.dumps(answers.get(self.path, {"error": "unknown model"})).encode()
        self.send_response(200 if self.path in answers else 400)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

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
        short = json.dumps({"inputs": [{"name": "TEXT", "shape": [2, 1], "datatype": "BYTES", "data": ["hi"]}]}).encode()
        for _ in range(2):
            status, text = post(url, short)
            assert status == 400 and "holds 1 element(s), shape [2, 1] needs 2" in json.loads(text)["error"]
        assert len(Recorder.seen) == 1 and Recorder.asked == ["/v2/models/m", "/v2/models/m/config"]  # asked once
        other = f"http://127.0.0.1:{front.server_address[1]}/v2/models/other/infer"
        assert post(other, short)[0] == 200 and len(Recorder.seen) == 2  # a model Triton does not describe: Triton decides
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


class FileRecorder(BaseHTTPRequestHandler):
    """TorchServe's inference API as the file front sees it: records (Content-Type, body) and answers 200."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list] = []

    def do_POST(self):
        FileRecorder.seen.append((self.headers.get("Content-Type"), self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_file_front_sends_any_body_as_a_file_and_answers_a_bad_token_with_401(monkeypatch, tmp_path):
    import urllib.error
    import urllib.request

    from labcli.serving.gateway import FileFront

    key_file = tmp_path / "key_file.json"
    key_file.write_text(json.dumps({"inference": {"key": "good"}, "management": {"key": "admin"}}))
    upstream = serve(FileRecorder)
    monkeypatch.setattr(FileFront, "upstream", upstream.server_address[:2])
    monkeypatch.setattr(FileFront, "key_file", key_file)
    monkeypatch.setattr(FileFront, "_key", None)
    front = serve(FileFront)
    url = f"http://127.0.0.1:{front.server_address[1]}/predictions/deepfake-voice"
    wav = b"RIFF\x00\x00\r\n\r\nWAVE" + bytes(range(256))
    try:
        for declared in ("application/x-www-form-urlencoded", "text/plain", "audio/wav", "application/json"):
            assert post(url, wav, {"Content-Type": declared, "Authorization": "Bearer good"}) == (200, "{}")
        request = urllib.request.Request(url, data=wav, headers={"Authorization": "Bearer good"})  # urllib adds a form type
        assert urllib.request.urlopen(request, timeout=10).status == 200
        assert FileRecorder.seen == [("application/octet-stream", wav)] * 5
        form = "multipart/form-data; boundary=x"
        assert post(url, b"--x--", {"Content-Type": form, "Authorization": "Bearer good"})[0] == 200
        assert FileRecorder.seen[-1] == (form, b"--x--")  # a form stays a form (TorchServe reads its file field)
        for headers, words in (({}, "no inference token"), ({"Authorization": "Bearer admin"}, "wrong inference token"),
                               ({"Authorization": "good"}, "no inference token")):
            request = urllib.request.Request(url, data=wav, headers={"Content-Type": "audio/wav", **headers})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(request, timeout=10)
            assert err.value.code == 401 and err.value.headers["WWW-Authenticate"].startswith("Bearer")
            assert words in json.loads(err.value.read())["error"]
        assert len(FileRecorder.seen) == 6  # refused requests never reached TorchServe
        key_file.write_text(json.dumps({"inference": {"key": "renewed"}}))  # keys renewed through the management API
        assert post(url, wav, {"Authorization": "Bearer renewed"})[0] == 200
    finally:
        front.shutdown()
        upstream.shutdown()
