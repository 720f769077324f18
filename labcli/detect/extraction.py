"""Model extraction by queries (Tramèr et al. 2016; Orekondy et al. 2019, Knockoff Nets) for `lab detect extraction`.

`VictimServer` serves a classifier over real HTTP on 127.0.0.1 (a port the OS picks) with the standard library's
ThreadingHTTPServer, the same server lab's HTTP front (labcli/serving/gateway.py) runs on; it starts in
milliseconds, where TorchServe needs a JVM and seconds to tens of seconds. The protocol:

    POST /v1/predict   Authorization: Bearer TOKEN   {"instances": [[784 floats in [0, 1]], ...]}
    200 {"predictions": [{"label": 3, "probabilities": [...10 floats...]}, ...]}      (probabilities per `output`)
    429 {"error": "..."} once a token's answered images would pass `budget_per_token` (the whole request is refused)

Defences are the server's `output` ("probabilities", "top1": label only, "rounded": probabilities rounded to
`decimals`) and the per-token budget. `Attacker` talks to it with http.client and a query budget; `query_images`
makes its queries without any MNIST image (uniform noise, or scikit-learn's 8x8 digits, another data set);
`train_clone` fits a copy on the answers.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import torch
import torch.nn.functional as F

OUTPUTS = ("probabilities", "top1", "rounded")


class BudgetExceeded(Exception):
    """The server answered 429: this token's query budget is spent."""


class VictimServer:
    """A classifier behind HTTP on 127.0.0.1:0, in a background thread. `counts` = answered images per token."""

    def __init__(self, model, *, output: str = "probabilities", decimals: int = 1, budget_per_token: int | None = None,
                 max_batch: int = 1000):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")
        self.model, self.output, self.decimals = model.eval(), output, decimals
        self.budget, self.max_batch = budget_per_token, max_batch
        self.counts: dict[str, int] = {}
        self.refused = 0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()

    def answer(self, x: np.ndarray) -> list[dict]:
        with torch.no_grad():
            probs = F.softmax(self.model(torch.from_numpy(x).view(-1, 1, 28, 28)), 1).numpy()
        out = []
        for p in probs:
            item = {"label": int(p.argmax())}
            if self.output == "probabilities":
                item["probabilities"] = [float(v) for v in p]
            elif self.output == "rounded":
                item["probabilities"] = [round(float(v), self.decimals) for v in p]
            out.append(item)
        return out

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # no access log on stderr
                pass

            def _send(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/predict":
                    return self._send(404, {"error": f"no endpoint {self.path}"})
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
                if not token:
                    return self._send(401, {"error": "missing Authorization: Bearer TOKEN"})
                try:
                    x = np.asarray(json.loads(body)["instances"], dtype=np.float32)
                    if x.ndim != 2 or x.shape[1] != 784 or not 1 <= len(x) <= server.max_batch:
                        raise ValueError(f"instances must be 1-{server.max_batch} rows of 784 pixels")
                except (ValueError, KeyError, TypeError) as exc:
                    return self._send(400, {"error": f"bad request: {exc}"})
                with server._lock:
                    used = server.counts.get(token, 0)
                    if server.budget is not None and used + len(x) > server.budget:
                        server.refused += len(x)
                        return self._send(429, {"error": f"query budget of {server.budget} images per token exhausted "
                                                         f"({used} answered)"})
                    server.counts[token] = used + len(x)
                return self._send(200, {"predictions": server.answer(x)})

        return Handler


class Attacker:
    """Queries a VictimServer over HTTP, `batch` images per request, until its own `budget` or the server's runs out."""

    def __init__(self, port: int, token: str, batch: int = 100):
        self.port, self.token, self.batch = port, token, batch
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def close(self):
        self.conn.close()

    def post(self, x: np.ndarray) -> tuple[int, dict]:
        body = json.dumps({"instances": x.reshape(len(x), -1).tolist()})
        self.conn.request("POST", "/v1/predict", body=body,
                          headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read())

    def query(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Send X in batches; returns (the images answered, their labels, their probabilities or None when the server
        sends labels only). Stops at the first 429. Pixels travel with 4 decimals (a fifth of the JSON); the images
        returned are those rounded ones, what the server saw."""
        X = X.round(4)
        answered, labels, probs = [], [], []
        for i in range(0, len(X), self.batch):
            status, body = self.post(X[i : i + self.batch])
            if status == 429:
                break
            if status != 200:
                raise RuntimeError(f"victim answered {status}: {body}")
            answered.append(X[i : i + self.batch])
            labels += [p["label"] for p in body["predictions"]]
            probs += [p.get("probabilities") for p in body["predictions"]]
        X_done = np.concatenate(answered) if answered else X[:0]
        has_probs = bool(probs) and probs[0] is not None
        return X_done, np.asarray(labels, dtype=np.int64), np.asarray(probs, dtype=np.float32) if has_probs else None


def query_images(kind: str, n: int, seed: int) -> np.ndarray:
    """n attacker images [n, 1, 28, 28] in [0, 1], none from MNIST. "noise": uniform pixels. "digits-8x8": scikit-learn's
    1,797 8x8 digits (UCI, another data set), upsampled to 20x20 and centred in 28x28 as MNIST digits are, with a
    random shift of up to 2 pixels per copy once they are all used."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.random((n, 1, 28, 28), dtype=np.float32)
    if kind != "digits-8x8":
        raise ValueError(f"unknown query kind {kind!r}")
    from labcli.data import digits

    d = digits.load("digits-8x8", size=20, seed=seed)
    big = F.pad(torch.cat([d.train_x, d.dev_x, d.test_x]), (4, 4, 4, 4)).numpy()
    order = np.concatenate([rng.permutation(len(big)) for _ in range(n // len(big) + 1)])[:n]
    out = big[order]
    for i in range(len(big), n):  # repeats: shifted copies
        dy, dx = rng.integers(-2, 3, size=2)
        out[i] = np.roll(out[i], (dy, dx), axis=(1, 2))
    return out


def train_clone(model, X: np.ndarray, labels: np.ndarray, probs: np.ndarray | None, *, epochs: int, lr: float = 1e-3,
                batch_size: int = 64, seed: int = 0):
    """Adam on the victim's answers: cross-entropy against its probabilities when it gives them (soft labels,
    renormalised: rounding can break the sum), against its labels otherwise."""
    X = torch.as_tensor(X)
    target = (torch.as_tensor(probs).clamp_min(0) if probs is not None else F.one_hot(torch.as_tensor(labels), 10).float())
    target = target / target.sum(1, keepdim=True).clamp_min(1e-12)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(X), generator=gen).split(batch_size):
            loss = -(target[idx] * F.log_softmax(model(X[idx]), 1)).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
