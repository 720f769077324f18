"""A bounded closed-loop load generator: C client threads, each sending a request, waiting for the
answer and sending the next, until a fixed number of requests is done (`lab bench serve`)."""

from __future__ import annotations

import threading
import time


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def closed_loop(make_client, send, concurrency: int, total: int, max_seconds: float, at_start=None) -> dict:
    """`total` timed calls of send(client, i) from `concurrency` threads, each with its own make_client()
    and one untimed warm-up call; at_start() runs once all are warm, just before timing starts.
    Latencies in ms; errors counted (never hidden)."""
    lock = threading.Lock()
    state = {"next": 0, "errors": 0, "first_error": None}
    latencies: list[float] = []
    ready = threading.Barrier(concurrency + 1)
    go = threading.Event()

    def fail(exc: Exception) -> None:
        with lock:
            state["errors"] += 1
            state["first_error"] = state["first_error"] or f"{type(exc).__name__}: {str(exc)[:200]}"

    def worker(client_id: int) -> None:
        client, warm = None, True
        try:
            client = make_client()
            send(client, client_id)  # warm-up: the connection is open before timing starts
        except Exception as exc:  # noqa: BLE001 - any failure is a failed request, counted and reported
            fail(exc)
            warm = False
        ready.wait()
        go.wait()
        while warm:
            with lock:
                i = state["next"]
                if i >= total or time.perf_counter() > deadline:
                    return
                state["next"] += 1
            start = time.perf_counter()
            try:
                send(client, i)
            except Exception as exc:  # noqa: BLE001 - as above
                fail(exc)
                continue
            with lock:
                latencies.append((time.perf_counter() - start) * 1000)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in range(concurrency)]
    for t in threads:
        t.start()
    ready.wait()
    if at_start is not None:
        at_start()
    started = time.perf_counter()
    deadline = started + max_seconds
    go.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": len(latencies) + state["errors"], "errors": state["errors"],
            "first_error": state["first_error"], "seconds": round(elapsed, 3),
            "req_per_s": round(len(latencies) / elapsed, 2) if elapsed else 0.0,
            "p50_ms": round(percentile(latencies, 50), 2), "p95_ms": round(percentile(latencies, 95), 2),
            "p99_ms": round(percentile(latencies, 99), 2)}
