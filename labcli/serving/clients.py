"""Thin clients for the servers lab starts (tritonclient for Triton, urllib for TorchServe)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np


class TritonClient:
    """KServe v2 inference over tritonclient's HTTP or gRPC client."""

    def __init__(self, endpoints: dict, protocol: str = "http"):
        if protocol == "http":
            import tritonclient.http as lib

            self.client = lib.InferenceServerClient(endpoints["http"].removeprefix("http://"), connection_timeout=60, network_timeout=300)
        else:
            import tritonclient.grpc as lib

            self.client = lib.InferenceServerClient(endpoints["grpc"])
        self.lib = lib

    def text(self, model: str, texts: list[str]) -> list[str]:
        data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        inp = self.lib.InferInput("TEXT", list(data.shape), "BYTES")
        inp.set_data_from_numpy(data)
        result = self.client.infer(model, [inp], outputs=[self.lib.InferRequestedOutput("TEXT")])
        return [x.decode("utf-8") for x in result.as_numpy("TEXT").reshape(-1)]

    def logits(self, model: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        inputs = []
        for name, value in arrays.items():
            inp = self.lib.InferInput(name, list(value.shape), "INT64")
            inp.set_data_from_numpy(value.astype(np.int64))
            inputs.append(inp)
        return self.client.infer(model, inputs, outputs=[self.lib.InferRequestedOutput("logits")]).as_numpy("logits")

    def close(self) -> None:
        self.client.close()


def post(url: str, body: bytes, headers: dict | None = None, timeout: float = 300.0) -> tuple[int, str]:
    """(status, body text) of a POST; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", errors="replace")


def post_json(url: str, obj, headers: dict | None = None) -> tuple[int, str]:
    return post(url, json.dumps(obj).encode("utf-8"), headers)


def fetch_text(url: str, timeout: float = 30.0) -> str:
    """GET `url` and return its body (a metrics page, a health check)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode("utf-8", errors="replace")


def prometheus_value(text: str, name: str, **labels: str) -> float:
    """The value of metric `name` whose labels include `labels` in a Prometheus text page (0.0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return 0.0
