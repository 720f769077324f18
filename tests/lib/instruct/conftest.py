"""A real local HTTP server speaking the OpenAI completions API, for the endpoint-teacher tests."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture
def server():
    """A completions server on a free port: answers each prompt with the next queued reply."""
    state = {"requests": [], "replies": [], "status": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"].append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            choices = [{"index": i, "text": state["replies"].pop(0) if state["replies"] else "", "finish_reason": "stop"}
                       for i, _ in enumerate(body["prompt"])]
            data = json.dumps({"choices": choices[::-1]}).encode()  # out of order on purpose: sorted by index
            self.send_response(state["status"])
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()
    httpd.server_close()
