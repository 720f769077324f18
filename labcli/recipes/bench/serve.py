"""`lab bench serve`: a bounded closed-loop load test of a served model at several concurrencies.

For each concurrency C, C client threads each send a request, wait for the answer, and send the
next, until `requests` requests are done (or `max_seconds` pass). Reports p50/p95/p99 latency and
requests/s, with server-side batching on and off (Triton: dynamic_batching in config.pbtxt;
TorchServe: batch_size vs 1), as JSON, a table (report.md) and a PNG. Client and server share
this machine's cores, as stated in the report.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from labcli import runs
from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.runs import Run
from labcli.serving import process
from labcli.serving.export import SAMPLE_TEXTS
from labcli.serving.source import resolve

# English prompts cycled by the clients (the Newari translator's input side).
PROMPTS = SAMPLE_TEXTS + ["good morning", "see you tomorrow", "what is your name", "the river is cold", "i like tea"]


class Config(RecipeConfig):
    backend: Literal["triton", "torchserve"] = Field("triton", description="Which server to load-test")
    run: str = Field("", description="Training run folder to serve (holds model/ and summary.json)")
    model: str = Field("tiny-mbart", description="Or a save_pretrained folder or tiny-* preset (used when run is empty)")
    kind: Literal["text", "logits"] = Field("text", description="text: greedy text out; logits: token ids -> logits (Triton only)")
    protocol: Literal["grpc", "http", "http-direct"] = Field(
        "grpc", description="Triton: gRPC; http: HTTP through lab's validating front; http-direct: Triton's own HTTP (no front)")
    concurrency: list[int] = Field([1, 8, 32], description="Closed-loop client counts to measure")
    requests: int = Field(128, ge=1, le=100000, description="Requests per concurrency level (bounded load)")
    max_seconds: float = Field(120.0, gt=0, description="Stop a level early after this many seconds")
    batching: list[bool] = Field([True, False], description="Server-side batching settings to compare")
    max_batch_size: int = Field(16, ge=1, le=1024, description="Triton max_batch_size / TorchServe batch_size when batching is on")
    queue_delay_us: int = Field(2000, ge=0, description="Triton max_queue_delay_microseconds / TorchServe max batch delay")
    max_new_tokens: int = Field(16, ge=1, le=1024, description="Greedy decoding length limit")
    threads: int = Field(1, ge=1, le=64, description="Server threads per model instance / worker")
    port: int = Field(0, ge=0, le=65535, description="First port to use; 0 picks a free block on 127.0.0.1")


PROTOCOLS = {"grpc": "gRPC, tritonclient", "http": "HTTP through lab's front, tritonclient",
             "http-direct": "Triton's own HTTP, tritonclient"}


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def closed_loop(send, concurrency: int, total: int, max_seconds: float) -> dict:
    """Run `total` calls of send(i) from `concurrency` threads; latencies in ms, errors counted."""
    lock = threading.Lock()
    state = {"next": 0, "errors": 0, "first_error": None}
    latencies: list[float] = []
    deadline = time.perf_counter() + max_seconds

    def worker(client_id: int) -> None:
        while True:
            with lock:
                i = state["next"]
                if i >= total or time.perf_counter() > deadline:
                    return
                state["next"] += 1
            start = time.perf_counter()
            try:
                send(client_id, i)
                ok = True
            except Exception as exc:  # counted, reported, never hidden
                ok = False
                with lock:
                    state["errors"] += 1
                    state["first_error"] = state["first_error"] or f"{type(exc).__name__}: {str(exc)[:200]}"
            if ok:
                with lock:
                    latencies.append((time.perf_counter() - start) * 1000)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": len(latencies) + state["errors"], "errors": state["errors"],
            "first_error": state["first_error"], "seconds": round(elapsed, 3),
            "req_per_s": round(len(latencies) / elapsed, 2) if elapsed else 0.0,
            "p50_ms": round(percentile(latencies, 50), 2), "p95_ms": round(percentile(latencies, 95), 2),
            "p99_ms": round(percentile(latencies, 99), 2)}


def triton_levels(cfg: Config, source, ctx: Run) -> list[dict]:
    from types import SimpleNamespace

    from labcli.serving.clients import TritonClient
    from labcli.serving.export import export_bundle, read_sample
    from labcli.serving.triton import build_repository, start_triton

    bundle = export_bundle(source, cfg.max_new_tokens)
    repo = ctx.path("model_repository")
    variants = {}
    for on in cfg.batching:
        server_cfg = SimpleNamespace(dynamic_batching=on, max_batch_size=cfg.max_batch_size, queue_delay_us=cfg.queue_delay_us,
                                     instances=1, threads=cfg.threads)
        variants[on] = build_repository(bundle, repo, source.name, server_cfg, suffix="" if on else "_nobatch")[cfg.kind]
    port = cfg.port or process.free_port_block(4)
    start_cfg = SimpleNamespace(setup=False, port=port, host=process.HOST, ready_timeout=180.0, gateway=True)
    proc, server = start_triton(start_cfg, repo, ctx.path("server.log"), f"bench-triton-{port}", ctx.dir)
    sample = read_sample(bundle)
    arrays = {k: v[:1] for k, v in sample.items() if k != "logits"}
    rows, shared, local = [], {}, threading.local()
    http = dict(server.endpoints, http=server.endpoints["triton_http"]) if cfg.protocol == "http-direct" else server.endpoints

    def client_for() -> TritonClient:
        """gRPC: one thread-safe client for all; HTTP: one per thread (tritonclient.http is gevent-bound to its thread)."""
        if cfg.protocol == "grpc":
            if "grpc" not in shared:  # made by the warm-up request, before the client threads start
                shared["grpc"] = TritonClient(server.endpoints, "grpc")
            return shared["grpc"]
        if not hasattr(local, "client"):
            local.client = TritonClient(http, "http")
        return local.client

    try:
        for on, model in variants.items():
            def send(c: int, i: int, model=model) -> None:
                if cfg.kind == "text":
                    client_for().text(model, [PROMPTS[i % len(PROMPTS)]])
                else:
                    client_for().logits(model, arrays)

            rows += measure(cfg, send, on)
        if "grpc" in shared:
            shared["grpc"].close()  # HTTP clients belong to their (finished) threads and close when collected
    finally:
        if not process.stop_server(server):
            raise UserError(f"bench: Triton (pgid {server.pgid}) left processes behind", "kill them by hand")
    return rows


def torchserve_levels(cfg: Config, source, ctx: Run) -> list[dict]:
    from types import SimpleNamespace

    from labcli.serving.clients import post_json
    from labcli.serving.torchserve import start_torchserve

    if cfg.kind != "text":
        raise UserError("TorchServe serves text only here", "use --kind text, or --backend triton for logits")
    rows = []
    for on in cfg.batching:
        port = cfg.port or process.free_port_block(5)
        run_dir = ctx.path(f"torchserve-{'batch' if on else 'nobatch'}")
        run_dir.mkdir(exist_ok=True)
        server_cfg = SimpleNamespace(port=port, host=process.HOST, batch_size=cfg.max_batch_size if on else 1,
                                     max_batch_delay_ms=max(1, cfg.queue_delay_us // 1000) if on else 0, workers=1,
                                     threads=cfg.threads, max_new_tokens=cfg.max_new_tokens, ready_timeout=240.0)
        proc, server, keys = start_torchserve(server_cfg, source, run_dir, f"bench-torchserve-{port}")
        headers = {"Authorization": f"Bearer {keys['inference']}"}
        try:
            def send(c: int, i: int) -> None:
                status, body = post_json(server.endpoints["predict"], {"text": PROMPTS[i % len(PROMPTS)]}, headers)
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {body[:200]}")

            rows += measure(cfg, send, on)
        finally:
            if not process.stop_server(server):
                raise UserError(f"bench: TorchServe (pgid {server.pgid}) left processes behind", "kill them by hand")
    return rows


def measure(cfg: Config, send, batching: bool) -> list[dict]:
    from rich.progress import track

    send(0, 0)  # warm-up
    rows = []
    for c in track(cfg.concurrency, description=f"{cfg.backend}, batching {'on' if batching else 'off'}"):
        row = {"backend": cfg.backend, "kind": cfg.kind, "batching": batching, **closed_loop(send, c, cfg.requests, cfg.max_seconds)}
        print(f"  batching {'on ' if batching else 'off'} c={c:<3} {row['req_per_s']:8.2f} req/s  p50 {row['p50_ms']:8.2f}  "
              f"p95 {row['p95_ms']:8.2f}  p99 {row['p99_ms']:8.2f} ms  errors {row['errors']}")
        rows.append(row)
    return rows


def run(cfg: Config, ctx: Run) -> None:
    if any(c < 1 or c > 256 for c in cfg.concurrency):
        raise UserError(f"concurrency {cfg.concurrency} must be between 1 and 256", "e.g. concurrency=[1,8,32]")
    source = resolve(cfg.run, cfg.model if not cfg.run else "")
    rows = (triton_levels if cfg.backend == "triton" else torchserve_levels)(cfg, source, ctx)
    by_key = {(r["batching"], r["concurrency"]): r for r in rows}
    for r in rows:
        base = by_key.get((False, r["concurrency"]))
        r["req_per_s_delta_pct"] = round(100 * (r["req_per_s"] / base["req_per_s"] - 1), 1) if base and base["req_per_s"] else None
    errors = sum(r["errors"] for r in rows)
    hardware = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared by client and server), no GPU"
    summary = {"backend": cfg.backend, "kind": cfg.kind, "protocol": cfg.protocol if cfg.backend == "triton" else "http",
               "model_dir": str(source.model_dir), "task": source.task,
               "requests_per_level": cfg.requests, "max_new_tokens": cfg.max_new_tokens, "errors": errors,
               "hardware": hardware, "rows": rows}
    runs.write_json(ctx.path("bench.json"), summary)
    for r in rows:
        ctx.log(**r)
    plot(rows, ctx.path("bench.png"), f"{cfg.backend} ({cfg.kind}) on {hardware}")
    ctx.write_summary(summary)
    ctx.write_report(report(summary))
    print(report(summary))
    if errors:
        first = next(r["first_error"] for r in rows if r["errors"])
        raise UserError(f"the load test had {errors} failed requests (first: {first})", f"see {ctx.dir}")


def table(rows: list[dict]) -> list[str]:
    lines = ["| server batching | concurrency | req/s | delta % | p50 ms | p95 ms | p99 ms | errors |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        delta = "" if r["req_per_s_delta_pct"] is None or not r["batching"] else f"{r['req_per_s_delta_pct']:+.1f}"
        lines.append(f"| {'on' if r['batching'] else 'off'} | {r['concurrency']} | {r['req_per_s']} | {delta} | "
                     f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['errors']} |")
    return lines


def report(summary: dict) -> str:
    lines = [f"# lab bench serve: {summary['backend']} ({summary['kind']})", "",
             f"- model: `{summary['model_dir']}` ({summary['task']}), greedy max_new_tokens {summary['max_new_tokens']}",
             f"- closed loop, {summary['requests_per_level']} requests per level, one request = one input "
             f"({PROTOCOLS[summary['protocol']] if summary['backend'] == 'triton' else 'HTTP, token auth'}); "
             f"hardware: {summary['hardware']}",
             f"- errors: {summary['errors']}; delta % = req/s with batching on vs off at the same concurrency", ""]
    return "\n".join(lines + table(summary["rows"]) + ["", "![bench](bench.png)"]) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for on in (True, False):
        sel = [r for r in rows if r["batching"] == on]
        if not sel:
            continue
        label, color = ("batching on", "C0") if on else ("batching off", "C1")
        xs = [r["concurrency"] for r in sel]
        left.plot(xs, [r["req_per_s"] for r in sel], marker="o", color=color, label=label)
        for q, style in (("p50_ms", "-"), ("p99_ms", ":")):
            right.plot(xs, [r[q] for r in sel], style, marker="o", color=color, label=f"{label} {q[:3]}")
    for ax, ylabel in ((left, "requests / s"), (right, "latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["concurrency"] for r in rows}), [str(c) for c in sorted({r["concurrency"] for r in rows})])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    from labcli.eval.plots import save

    save(fig, path)
