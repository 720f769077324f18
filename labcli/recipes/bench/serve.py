"""`lab bench serve`: a bounded closed-loop load test of a served model.

One cell = one protocol x server batching setting x concurrency C: C client threads each open
their connection and send one untimed request, then (timed) each sends a request, waits for the
answer and sends the next, until `requests` requests are done (or `max_seconds` pass). Cells are
repeated `repeats` times, interleaved (repeat 1 of every cell, then repeat 2, ...) so drift in the
machine's load spreads over all of them; the table shows the median and the min-max spread of
requests/s. Triton: one server holds the batching and no-batching models; its metrics give the
mean batch Triton formed in each cell's timed window (inputs / model executions). TorchServe: one server per
batching setting (batch_size vs 1). With protocols http and http-direct, the report adds what
lab's HTTP front costs: 1 - req/s through the front / req/s straight to Triton, per repeat.
Client and server share this machine's cores, as stated with the load average in the report.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.eval.measure import hardware_line
from labcli.eval.tables import markdown_table, print_table
from labcli.runs import Run
from labcli.serving import process
from labcli.serving.export import SAMPLE_TEXTS
from labcli.serving.loadtest import closed_loop
from labcli.serving.source import resolve

RESUMABLE = True  # measured load-test cells are kept (ctx.cell); --resume auto restarts the server, runs the rest
# English prompts cycled by the clients (the Newari translator's input side).
PROMPTS = SAMPLE_TEXTS + ["good morning", "see you tomorrow", "what is your name", "the river is cold", "i like tea"]
Protocol = Literal["grpc", "http", "http-direct"]
PROTOCOLS = {"grpc": "Triton's gRPC, tritonclient (one shared client)",
             "http": "HTTP through lab's front, tritonclient (one client per thread)",
             "http-direct": "Triton's own HTTP, tritonclient (one client per thread)",
             "torchserve-http": "TorchServe's HTTP with token auth, urllib (a connection per request)"}
COLUMNS = ["protocol", "batching", "concurrency", "req_per_s", "req_per_s_min", "req_per_s_max", "delta_pct",
           "p50_ms", "p95_ms", "p99_ms", "mean_batch", "errors"]


class Config(RecipeConfig):
    backend: Literal["triton", "torchserve"] = Field("triton", description="Which server to load-test")
    run: str = Field("", description="Training run folder to serve (holds model/ and summary.json)")
    model: str = Field("tiny-mbart", description="Or a save_pretrained folder or tiny-* preset (used when run is empty)")
    kind: Literal["text", "logits"] = Field("text", description="text: greedy text out; logits: token ids -> logits (Triton only)")
    protocols: list[Protocol] = Field(
        ["grpc"], description="Triton: grpc; http: through lab's HTTP front; http-direct: Triton's own HTTP. TorchServe is "
                              "always its HTTP API (leave the default)")
    concurrency: list[Annotated[int, Field(ge=1, le=256)]] = Field([1, 8, 32], min_length=1, description="Closed-loop client counts")
    requests: int = Field(128, ge=1, le=100000, description="Timed requests per cell (bounded load)")
    repeats: int = Field(1, ge=1, le=50, description="Interleaved repeats of every cell; the table shows median and min-max")
    max_seconds: float = Field(120.0, gt=0, description="Stop a cell early after this many seconds")
    batching: list[bool] = Field([True, False], min_length=1, description="Server-side batching settings to compare")
    max_batch_size: int = Field(16, ge=1, le=1024, description="Triton max_batch_size / TorchServe batch_size when batching is on")
    queue_delay_us: int = Field(2000, ge=0, description="Triton max_queue_delay_microseconds / TorchServe max batch delay")
    max_new_tokens: int = Field(16, ge=1, le=1024, description="Greedy decoding length limit")
    threads: int = Field(1, ge=1, le=64, description="Server threads per model instance / worker")
    ready_timeout: float = Field(240.0, gt=0, description="Seconds to wait for each server to be ready")
    port: int = Field(0, ge=0, le=65535, description="First port to use; 0 picks a free block on 127.0.0.1")


def cells_order(cfg: Config, protocols: list[str], batching: list[bool]) -> list[tuple[int, bool, int, str]]:
    """(repeat, batching, concurrency, protocol), interleaved: every cell once, then every cell again."""
    return [(r, on, c, p) for r in range(cfg.repeats) for on in batching for c in cfg.concurrency for p in protocols]


def triton_cells(cfg: Config, source, ctx: Run) -> list[dict]:
    from rich.progress import track

    from labcli.serving.clients import TritonClient
    from labcli.serving.decoding import for_source
    from labcli.serving.export import export_bundle, read_sample
    from labcli.serving.triton import (
        ModelOptions,
        batch_counts,
        build_repository,
        start_triton,
    )

    bundle = export_bundle(source, for_source(source, cfg.max_new_tokens))
    repo = ctx.path("model_repository")
    models = {}
    for on in cfg.batching:
        options = ModelOptions(dynamic_batching=on, max_batch_size=cfg.max_batch_size, queue_delay_us=cfg.queue_delay_us,
                               instances=1, threads=cfg.threads)
        models[on] = build_repository(bundle, repo, source.name, options, suffix="" if on else "_nobatch")[cfg.kind]
    port = cfg.port or process.free_port_block(4)
    _, server = start_triton(repo, name=f"bench-triton-{port}", run_dir=ctx.dir, host=process.HOST, port=port,
                                gateway="http" in cfg.protocols, ready_timeout=cfg.ready_timeout)
    sample = read_sample(bundle)
    arrays = {k: v[:1] for k, v in sample.items() if k != "logits"}
    e = server.endpoints
    http_of = {"http": e["http"], "http-direct": e.get("triton_http", e["http"])}
    shared: dict = {}

    def client_factory(protocol: str):
        if protocol == "grpc":  # one thread-safe client for all threads
            return lambda: shared.setdefault("grpc", TritonClient(e, "grpc"))
        return lambda: TritonClient(dict(e, http=http_of[protocol]), "http")  # gevent-bound: one per thread

    def send_to(model: str):
        if cfg.kind == "text":
            return lambda client, i: client.text(model, [PROMPTS[i % len(PROMPTS)]])
        return lambda client, i: client.logits(model, arrays)

    cells = []
    try:
        def measure(r: int, on: bool, c: int, protocol: str) -> dict:
            before = {}
            cell = closed_loop(client_factory(protocol), send_to(models[on]), c, cfg.requests, cfg.max_seconds,
                               at_start=lambda model=models[on], before=before: before.update(batch_counts(e["metrics"], model)))
            after = batch_counts(e["metrics"], models[on])
            inputs, runs_ = (after[k] - before[k] for k in ("inference_count", "inference_exec_count"))
            return {"protocol": protocol, "batching": on, "repeat": r, **cell, "mean_batch": round(inputs / runs_, 2) if runs_ else None}

        for r, on, c, protocol in track(cells_order(cfg, cfg.protocols, cfg.batching), description="load test", transient=True):
            cells.append(ctx.cell(cell_name(protocol, on, c, r), lambda: measure(r, on, c, protocol)))
        if "grpc" in shared:
            shared["grpc"].close()  # HTTP clients belong to their (finished) threads and close when collected
    finally:
        if not process.stop_server(server):
            raise UserError(f"bench: Triton (pgid {server.pgid}) left processes behind", "kill them by hand")
    return cells


def cell_name(protocol: str, batching: bool, clients: int, repeat: int) -> str:
    """A load-test cell, kept once measured (ctx.cell): a resumed bench restarts the server and runs the rest."""
    return f"{protocol}-{'batch' if batching else 'nobatch'}-c{clients}-r{repeat}"


def torchserve_cells(cfg: Config, source, ctx: Run) -> list[dict]:
    from rich.progress import track

    from labcli.serving.clients import post_json
    from labcli.serving.torchserve import Batching, start_torchserve

    cells = []
    for on in cfg.batching:
        port = cfg.port or process.free_port_block(5)
        run_dir = ctx.path(f"torchserve-{'batch' if on else 'nobatch'}")
        run_dir.mkdir(exist_ok=True)
        batching = Batching(batch_size=cfg.max_batch_size, max_batch_delay_ms=max(1, cfg.queue_delay_us // 1000)) if on \
            else Batching(batch_size=1, max_batch_delay_ms=0)
        _, server, keys = start_torchserve(source, run_dir, name=f"bench-torchserve-{port}", host=process.HOST, port=port,
                                              batching=batching, threads=cfg.threads, max_new_tokens=cfg.max_new_tokens,
                                              ready_timeout=cfg.ready_timeout)
        headers = {"Authorization": f"Bearer {keys['inference']}"}

        def send(client, i: int, server=server, headers=headers) -> None:
            status, body = post_json(server.endpoints["predict"], {"text": PROMPTS[i % len(PROMPTS)]}, headers)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:200]}")

        try:
            for r, _, c, protocol in track(cells_order(cfg, ["torchserve-http"], [on]), description=f"batching {on}", transient=True):
                cells.append(ctx.cell(cell_name(protocol, on, c, r), lambda: {
                    "protocol": protocol, "batching": on, "repeat": r,
                    **closed_loop(lambda: None, send, c, cfg.requests, cfg.max_seconds), "mean_batch": None}))
        finally:
            if not process.stop_server(server):
                raise UserError(f"bench: TorchServe (pgid {server.pgid}) left processes behind", "kill them by hand")
    return cells


def aggregate(cells: list[dict]) -> list[dict]:
    """One row per (protocol, batching, concurrency): medians over repeats, min-max of req/s, delta vs batching off."""
    groups: dict[tuple, list[dict]] = {}
    for cell in cells:
        groups.setdefault((cell["protocol"], cell["batching"], cell["concurrency"]), []).append(cell)
    rows = []
    for (protocol, on, c), group in groups.items():
        rates = [g["req_per_s"] for g in group]
        batches = [g["mean_batch"] for g in group if g["mean_batch"] is not None]
        rows.append({"protocol": protocol, "batching": "on" if on else "off", "concurrency": c, "repeats": len(group),
                     "req_per_s": round(statistics.median(rates), 1), "req_per_s_min": min(rates), "req_per_s_max": max(rates),
                     **{q: round(statistics.median(g[q] for g in group), 2) for q in ("p50_ms", "p95_ms", "p99_ms")},
                     "mean_batch": round(statistics.median(batches), 2) if batches else None,
                     "errors": sum(g["errors"] for g in group)})
    base = {(r["protocol"], r["concurrency"]): r["req_per_s"] for r in rows if r["batching"] == "off"}
    for r in rows:
        off = base.get((r["protocol"], r["concurrency"]))
        r["delta_pct"] = round(100 * (r["req_per_s"] / off - 1), 1) if r["batching"] == "on" and off else None
    return rows


def gateway_cost(cells: list[dict]) -> list[dict]:
    """What lab's HTTP front costs: 1 - req/s(http) / req/s(http-direct), per repeat of each (batching, concurrency)."""
    direct = {(g["batching"], g["concurrency"], g["repeat"]): g["req_per_s"] for g in cells if g["protocol"] == "http-direct"}
    costs: dict[tuple, list[float]] = {}
    for g in cells:
        base = direct.get((g["batching"], g["concurrency"], g["repeat"]))
        if g["protocol"] == "http" and base:
            costs.setdefault((g["batching"], g["concurrency"]), []).append(100 * (1 - g["req_per_s"] / base))
    return [{"batching": "on" if on else "off", "concurrency": c, "repeats": len(v), "front_cost_pct": round(statistics.median(v), 1),
             "front_cost_min": round(min(v), 1), "front_cost_max": round(max(v), 1)} for (on, c), v in costs.items()]


def check(cfg: Config) -> list[str]:
    """For `lab check`: the server the bench starts can start here."""
    from labcli.serving.torchserve import java_problem
    from labcli.serving.triton import env_problem

    problem = env_problem() if cfg.backend == "triton" else java_problem()
    return [problem] if problem else []


def plan(cfg: Config) -> str:
    """For `lab check`: what the load test will send."""
    protocols = cfg.protocols if cfg.backend == "triton" else ["torchserve-http"]
    cells = len(cells_order(cfg, protocols, cfg.batching))
    return (f"{cells} cells ({', '.join(protocols)} x batching {cfg.batching} x concurrency {cfg.concurrency} x "
            f"{cfg.repeats} repeat(s)) of {cfg.requests} {cfg.kind} requests against {cfg.backend}")


def run(cfg: Config, ctx: Run) -> None:
    if cfg.backend == "torchserve" and (cfg.kind != "text" or cfg.protocols != ["grpc"]):
        raise UserError("TorchServe is load-tested with text over its HTTP API only",
                        "drop --kind/--protocols, or use --backend triton for logits and protocol comparisons")
    if cfg.backend == "triton":  # a missing server fails in a second, before any model is built
        from labcli.serving.triton import prepare_local

        prepare_local()
    else:
        from labcli.serving.torchserve import java_check

        java_check()
    source = resolve(cfg.run, cfg.model if not cfg.run else "")
    load_before = os.getloadavg()
    cells = (triton_cells if cfg.backend == "triton" else torchserve_cells)(cfg, source, ctx)
    load_after = os.getloadavg()
    for cell in cells:
        ctx.log(**cell)
    rows = aggregate(cells)
    errors = sum(c["errors"] for c in cells)
    summary = {"backend": cfg.backend, "kind": cfg.kind, "protocols": sorted({c["protocol"] for c in cells}),
               "model_dir": str(source.model_dir), "task": source.task, "requests_per_cell": cfg.requests, "repeats": cfg.repeats,
               "max_new_tokens": cfg.max_new_tokens, "max_batch_size": cfg.max_batch_size, "queue_delay_us": cfg.queue_delay_us,
               "errors": errors, "hardware": f"{hardware_line()}; client threads and server share these cores",
               "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
               "rows": rows, "gateway_cost": gateway_cost(cells), "cells": cells}
    plot(rows, ctx.path("bench.png"), f"{cfg.backend} ({cfg.kind}); {hardware_line()}")
    ctx.write_summary(summary)
    ctx.write_report(report(summary))
    print_table(rows, COLUMNS, title=f"lab bench serve: {cfg.backend}, {cfg.kind}, {cfg.requests} requests/cell, "
                                     f"{cfg.repeats} repeat(s): median (min-max) req/s")
    for row in summary["gateway_cost"]:
        print(f"lab's HTTP front costs {row['front_cost_pct']:+.1f}% of direct req/s at {row['concurrency']} client(s), "
              f"batching {row['batching']} (min {row['front_cost_min']:+.1f}%, max {row['front_cost_max']:+.1f}%, {row['repeats']} repeats)")
    print(f"load average (1/5/15 min): {summary['load_average']['before']} before, {summary['load_average']['after']} after; "
          f"errors: {errors}")
    if errors:
        first = next(c["first_error"] for c in cells if c["errors"])
        raise UserError(f"the load test had {errors} failed requests (first: {first})", f"see {ctx.dir}")


def report(summary: dict) -> str:
    load = summary["load_average"]
    lines = [f"# lab bench serve: {summary['backend']} ({summary['kind']})", "",
             f"- model: `{summary['model_dir']}` ({summary['task']}), greedy max_new_tokens {summary['max_new_tokens']}",
             (f"- closed loop, {summary['requests_per_cell']} timed requests per cell after one untimed request per client, "
              f"{summary['repeats']} interleaved repeat(s); one request = one input"),
             *[f"- {p}: {PROTOCOLS[p]}" for p in summary["protocols"]],
             (f"- batching on: max_batch_size {summary['max_batch_size']}, queue delay {summary['queue_delay_us']} us; "
              "mean_batch = inputs / model executions in the cell (Triton metrics)"),
             f"- hardware: {summary['hardware']}; load average {load['before']} before, {load['after']} after",
             f"- errors: {summary['errors']}; delta_pct = median req/s with batching on vs off, same protocol and concurrency", "",
             markdown_table(summary["rows"], COLUMNS)]
    if summary["gateway_cost"]:
        lines += ["## What lab's HTTP front costs (1 - req/s through it / req/s straight to Triton)", "",
                  markdown_table(summary["gateway_cost"])]
    return "\n".join(lines + ["![bench](bench.png)"]) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labcli.eval.plots import save

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    series = sorted({(r["protocol"], r["batching"]) for r in rows})
    for k, (protocol, on) in enumerate(series):
        sel = [r for r in rows if (r["protocol"], r["batching"]) == (protocol, on)]
        label, color = f"{protocol}, batching {on}", f"C{k}"
        xs = [r["concurrency"] for r in sel]
        left.errorbar(xs, [r["req_per_s"] for r in sel], marker="o", color=color, label=label, capsize=3,
                      yerr=[[r["req_per_s"] - r["req_per_s_min"] for r in sel], [r["req_per_s_max"] - r["req_per_s"] for r in sel]])
        for q, style in (("p50_ms", "-"), ("p99_ms", ":")):
            right.plot(xs, [r[q] for r in sel], style, marker="o", color=color, label=f"{label} {q[:3]}")
    for ax, ylabel in ((left, "requests / s (median, min-max)"), (right, "latency (ms)")):
        ax.set_xscale("log", base=2)
        ticks = sorted({r["concurrency"] for r in rows})
        ax.set_xticks(ticks, [str(c) for c in ticks])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    save(fig, path)
