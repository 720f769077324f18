"""lab's HTTP front for Triton: malformed KServe v2 bodies get a 400 here, everything else is forwarded unchanged.

(FileFront, below, is the same front before TorchServe's file API for `lab serve detector`.)

Triton 2.51 answers a body it cannot parse as JSON with HTTP 500 ("failed to parse the request JSON
buffer"), before any model code runs. A 5xx tells clients and load balancers "retry, the server is
broken" when the fault is the request's. This front checks what Triton checks too late (the JSON
itself, honouring the binary-tensor extension's Inference-Header-Content-Length, and the top-level
shape of a v2 request), then each tensor against the model's declared inputs (kserve.py: names,
datatypes, shape x element count, nested data, value types; Triton answers a count mismatch with
500), and forwards every request byte for byte, over one kept-alive upstream connection per client
connection, and never sends a request twice (a POST that may have reached Triton and failed
afterwards gets a 502, not a retry). The model's inputs are asked of Triton once per model. Checks
on the text itself (empty or oversized) stay in the served model, which answers 400 itself.
Standard library only, so it starts in milliseconds.

Given a command after `--`, the front starts it (Triton) as its child and exits with its exit code,
so the two live and die as one process group (lab runs this file by its path, so the front is the
labcli that started it even where the server's environment drops PYTHONPATH):

    python labcli/serving/gateway.py --listen 127.0.0.1:8000 --upstream 127.0.0.1:8003 -- tritonserver ...
"""

from __future__ import annotations

import argparse
import hmac
import http.client
import json
import re
import select
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

if __name__ == "__main__" and not __package__:  # run by path: import the labcli this file belongs to, not its folder's
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from labcli.serving import kserve

MAX_BODY = 256 * 1024 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "content-length"}


def infer_model(path: str) -> str | None:
    """The model name of a v2 inference path (/v2/models/NAME[/versions/V]/infer), else None."""
    match = re.fullmatch(r"/v2/models/([^/]+)(?:/versions/[^/]+)?/infer/?", path.split("?")[0])
    return match.group(1) if match else None


def request_problem(path: str, headers, body: bytes, model_spec=None) -> str | None:
    """Why a POST body cannot be a KServe v2 inference request, or None when Triton should see it.

    `model_spec(name)` gives the model's declared inputs (a kserve.Model) or None when unknown."""
    if not path.split("?")[0].rstrip("/").endswith("/infer"):
        return None
    json_part = body
    header_length = headers.get("Inference-Header-Content-Length")
    if header_length is not None:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            return f"Inference-Header-Content-Length {header_length!r} is not a length within the {len(body)}-byte body"
        json_part = body[:int(header_length)]
    try:
        request = json.loads(json_part)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"request body is not valid JSON ({exc}); send a KServe v2 body: {{\"inputs\": [{{\"name\": ..., \"shape\": [...], \"datatype\": ..., \"data\": [...]}}]}}"
    if not isinstance(request, dict):
        return f"request body must be a JSON object with \"inputs\", got {type(request).__name__}"
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) for i in inputs):
        return "\"inputs\" must be a non-empty list of tensor objects (name, shape, datatype, data)"
    name = infer_model(path)
    spec = model_spec(name) if model_spec and name else None
    return kserve.problem(request, spec) if spec else None


class Gateway(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as tritonclient expects
    disable_nagle_algorithm = True  # headers and body go out as two writes: without this, +40 ms (delayed ACK)
    upstream: tuple[str, int] = ("127.0.0.1", 8003)
    server_version = "lab-gateway"

    def do_GET(self):
        self.forward(b"")

    def do_HEAD(self):
        self.forward(b"")

    def do_POST(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.reply(411, "chunked request bodies are not supported; send Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self.reply(400, "Content-Length is not an integer")
        if length > MAX_BODY:
            self.close_connection = True
            return self.reply(413, f"request body of {length} bytes is over the {MAX_BODY} byte limit")
        body = self.rfile.read(length)
        refused = self.refuse(body)
        if refused:
            return self.reply(*refused)
        self.forward(body)

    def refuse(self, body: bytes) -> tuple | None:
        """(status, message[, headers]) to answer here instead of forwarding, or None."""
        problem = request_problem(self.path, self.headers, body, self.model_spec)
        return (400, problem) if problem else None

    def upstream_headers(self) -> dict:
        return {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}

    def forward(self, body: bytes) -> None:
        """Send the request upstream once. A POST is never sent twice: it may have reached Triton (and run)
        even when the answer is lost, so a failure after sending is a 502. Only a kept-alive connection
        that Triton already closed is replaced, before anything is sent on it."""
        headers = self.upstream_headers()
        headers["Content-Length"] = str(len(body))
        try:
            conn = self.upstream_connection()
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.drop_upstream()
            return self.reply(502, f"the server at {self.upstream[0]}:{self.upstream[1]} did not answer ({exc}); "
                                   "the request was not retried")
        if response.will_close:
            self.drop_upstream()
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    specs: ClassVar[dict] = {}  # model name -> kserve.Model, shared by all connections
    specs_lock = threading.Lock()

    def model_spec(self, name: str):
        """The model's declared inputs, asked of Triton once (None, not kept: unknown or not loaded yet; Triton decides)."""
        with self.specs_lock:
            if name in self.specs:
                return self.specs[name]
        answers = []
        for suffix in ("", "/config"):
            try:
                conn = http.client.HTTPConnection(*self.upstream, timeout=30)
                conn.request("GET", f"/v2/models/{name}{suffix}")
                response = conn.getresponse()
                answers.append(json.loads(response.read()) if response.status == 200 else None)
                conn.close()
            except (OSError, http.client.HTTPException, ValueError):
                return None  # not cached: ask again next time
        if not all(answers):
            return None
        spec = kserve.Model.from_triton(*answers)
        with self.specs_lock:
            self.specs[name] = spec
        return spec

    def upstream_connection(self) -> http.client.HTTPConnection:
        """This client connection's upstream connection, reconnected if Triton closed the idle one."""
        conn = getattr(self, "_upstream", None)
        if conn is not None and closed_by_peer(conn.sock):
            self.drop_upstream()
            conn = None
        if conn is None:
            conn = http.client.HTTPConnection(*self.upstream, timeout=600)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._upstream = conn
        return conn

    def finish(self) -> None:
        super().finish()
        self.drop_upstream()  # the client connection is done: so is its upstream one

    def drop_upstream(self) -> None:
        conn, self._upstream = getattr(self, "_upstream", None), None
        if conn is not None:
            conn.close()

    def reply(self, status: int, message: str, headers: dict | None = None) -> None:
        data = json.dumps({"error": message}).encode("utf-8")
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass  # Triton logs the requests; the front stays quiet


class FileFront(Gateway):
    """In front of TorchServe's inference API for `lab serve detector` (files in): the body is the file.

    TorchServe's frontend decodes a body by its Content-Type: a WAV sent as curl's default
    application/x-www-form-urlencoded gets HTTP 500 "Bad end of line", text/plain is decoded as text.
    Here every Content-Type but multipart/form-data goes on as application/octet-stream, so the raw
    bytes reach the handler whatever the client declared. TorchServe answers a missing or wrong token
    with 400; here it is a 401 with `WWW-Authenticate: Bearer` before TorchServe sees the request."""

    key_file: Path = Path("key_file.json")  # TorchServe writes it at start (and again when keys are renewed)
    _key: str | None = None

    def refuse(self, body: bytes) -> tuple | None:
        sent = self.headers.get("Authorization", "")
        token = sent[7:].strip() if sent[:7].lower() == "bearer " else ""
        if not token:
            message = f"no inference token: send `Authorization: Bearer <inference key>` (keys in {self.key_file})"
            return 401, message, {"WWW-Authenticate": "Bearer"}
        if not self.token_ok(token):
            return 401, f"wrong inference token (the inference key is in {self.key_file})", \
                {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        return None

    def token_ok(self, token: str) -> bool:
        for fresh in (False, True):  # the cached key first; read the file again if the key was renewed
            if fresh or FileFront._key is None:
                try:
                    FileFront._key = json.loads(self.key_file.read_text(encoding="utf-8"))["inference"]["key"]
                except (OSError, ValueError, KeyError, TypeError):
                    return False
            if hmac.compare_digest(token.encode(), FileFront._key.encode()):
                return True
        return False

    def upstream_headers(self) -> dict:
        headers = super().upstream_headers()
        declared = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        if not declared.lower().startswith("multipart/form-data"):
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            headers["Content-Type"] = "application/octet-stream"
        return headers


def closed_by_peer(sock) -> bool:
    """Whether an idle connection has been closed by the other side (readable with nothing, or reset).

    An idle HTTP/1.1 connection has nothing to read; if select() says it is readable, the peer sent
    EOF (or, against the protocol, stray bytes): either way it must not carry the next request."""
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, type=address, help="HOST:PORT this front binds")
    parser.add_argument("--upstream", required=True, type=address, help="HOST:PORT of the server's own HTTP endpoint")
    parser.add_argument("--files", metavar="KEY_FILE", type=Path,
                        help="front TorchServe's file API (FileFront) with the inference key in KEY_FILE, not Triton")
    parser.add_argument("command", nargs="*", help="after --: the server to run as a child (its exit ends the front)")
    args = parser.parse_args(argv)
    front = FileFront if args.files else Gateway
    front.upstream = args.upstream
    if args.files:
        FileFront.key_file = args.files
    ThreadingHTTPServer.request_queue_size = 1024  # the stdlib's 5 drops SYNs under 32 clients: 1 s retransmits
    with ThreadingHTTPServer(args.listen, front) as server:
        print(f"lab front on http://{args.listen[0]}:{args.listen[1]} -> {'TorchServe' if args.files else 'Triton'} "
              f"http://{args.upstream[0]}:{args.upstream[1]}", file=sys.stderr, flush=True)
        if not args.command:
            server.serve_forever()
            return
        child = subprocess.Popen(args.command)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        code = child.wait()
        print(f"lab gateway: {args.command[0]} exited with code {code}", file=sys.stderr, flush=True)
        sys.exit(code if code >= 0 else 128 - code)  # killed by signal N: 128+N, as shells report it


if __name__ == "__main__":
    main()
