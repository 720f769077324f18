"""TorchServe launchers: Java check, .mar archive, config.properties, start, wait, token keys, smoke test.

`lab serve torchserve`, `lab serve detector` and `lab bench serve` call these with explicit
arguments. TorchServe is archived (limited maintenance since 2025-08), so Triton is the main path.
Every listener (inference `port`, management port+1, metrics port+2, gRPC port+3 and port+4) binds
`host` (loopback by default), and token authorization stays ON: TorchServe writes the keys to
RUN/key_file.json and clients send `Authorization: Bearer <inference key>`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from labcli import runs
from labcli.errors import UserError
from labcli.serving import process
from labcli.serving.decoding import for_source
from labcli.serving.export import SAMPLE_TEXTS, eager_generate, load_eager
from labcli.serving.source import Source

HERE = Path(__file__).parent
TEXT_HANDLER = HERE / "torchserve_handler.py"  # text in -> greedy text out
DETECTOR_HANDLER = HERE / "detector_handler.py"  # a file in -> P(fake) out (`lab serve detector`)
INSTALL_HINT = "pip install torchserve torch-model-archiver pyyaml (or pip install 'labcli[serve]')"


@dataclass(frozen=True)
class Batching:
    """TorchServe's per-model batching and workers (the `models` entry of config.properties)."""

    batch_size: int = 8
    max_batch_delay_ms: int = 5
    workers: int = 1


def java_check() -> None:
    """One line naming what TorchServe lacks here: Java 11+ (JAVA_HOME or `java` on PATH), or its Python modules."""
    java = Path(os.environ["JAVA_HOME"]) / "bin" / "java" if os.environ.get("JAVA_HOME") else shutil.which("java")
    if not java or not Path(java).exists():
        where = f"JAVA_HOME={os.environ['JAVA_HOME']} has no bin/java" if os.environ.get("JAVA_HOME") else "no `java` on PATH"
        raise UserError(f"TorchServe needs Java 11+ and {where}",
                        "apt-get install openjdk-17-jre-headless (or set JAVA_HOME to a JDK/JRE 11+)")
    for module in ("ts", "model_archiver", "yaml"):
        try:
            __import__(module)
        except ImportError:
            raise UserError(f"python module '{module}' is missing (TorchServe workers crash-loop without it)", INSTALL_HINT) from None


def java_problem() -> str | None:
    """For `lab check`: why TorchServe cannot start here ("WHAT (hint: FIX)"), or None."""
    try:
        java_check()
    except UserError as exc:
        return str(exc)
    return None


def serve_meta(source: Source, tokenizer, model, decoding: dict, threads: int) -> dict:
    """What the text handler needs: the task, the run's decoding (decoding.py), the input limit, threads."""
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None) or 512
    model_max = tokenizer.model_max_length if tokenizer.model_max_length < 1e9 else positions
    limit = min(positions, model_max, 512, decoding.get("max_source_len") or 10**9)
    return {"task": source.task, "decoding": decoding, "threads": threads, "max_input_tokens": int(limit)}


def build_mar(name: str, handler: Path, files: list[Path], meta: dict, work: Path) -> Path:
    """torch-model-archiver: handler + files + serve_meta.json -> work/model_store/<name>.mar; returns the store."""
    runs.write_json(work / "serve_meta.json", meta)
    store = work / "model_store"
    store.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "model_archiver.model_packaging", "--model-name", name, "--version", "1.0",
           "--handler", str(handler), "--extra-files", ",".join(str(p) for p in [*files, work / "serve_meta.json"]),
           "--export-path", str(store), "--archive-format", "default", "--force"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(f"torch-model-archiver failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}",
                        INSTALL_HINT)
    return store


def write_properties(path: Path, store: Path, name: str, host: str, port: int, batching: Batching,
                     max_request_size: int = 2**20, inference: str | None = None) -> None:
    """config.properties; `inference` (host:port) moves the inference API elsewhere (behind lab's front)."""
    models = {name: {"1.0": {"defaultVersion": True, "marName": f"{name}.mar", "minWorkers": batching.workers,
                             "maxWorkers": batching.workers, "batchSize": batching.batch_size,
                             "maxBatchDelay": batching.max_batch_delay_ms, "responseTimeout": 300}}}
    lines = [
        f"inference_address=http://{inference or f'{host}:{port}'}", f"management_address=http://{host}:{port + 1}",
        f"metrics_address=http://{host}:{port + 2}", f"grpc_inference_address={host}", f"grpc_inference_port={port + 3}",
        f"grpc_management_address={host}", f"grpc_management_port={port + 4}",
        f"model_store={store}", f"load_models={name}.mar", f"models={json.dumps(models)}",
        f"default_workers_per_model={batching.workers}", "install_py_dep_per_model=false", "metrics_mode=prometheus",
        "enable_envvars_config=false", "disable_system_metrics=false", "job_queue_size=256",
        f"max_request_size={max_request_size}", "max_response_size=6553500", "token_expiration_min=1440",
    ]
    runs.write_text(path, "\n".join(lines) + "\n")


def read_keys(folder: Path, proc, log: Path, timeout: float) -> dict:
    """TorchServe writes key_file.json into its working directory once the frontend is up."""
    import time

    path = folder / "key_file.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"TorchServe exited with code {proc.returncode} while starting: {process.last_error(log)}",
                            f"check Java 17 and {INSTALL_HINT}")
        try:
            keys = json.loads(path.read_text(encoding="utf-8"))
            return {"inference": keys["inference"]["key"], "management": keys["management"]["key"]}
        except (OSError, json.JSONDecodeError, KeyError):
            time.sleep(0.25)
    raise UserError(f"TorchServe wrote no token file {path}", "see ts_log in the run folder")


def worker_failure(run_dir: Path) -> str | None:
    """The worker's error once it has died three times (TorchServe would retry with back-off for minutes)."""
    log = run_dir / "ts_log" / "model_log.log"
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if text.count("Traceback (most recent call last)") < 3:
        return None
    errors = [ln.split("MODEL_LOG - ", 1)[-1] for ln in text.splitlines() if "Error" in ln or "error" in ln]
    return errors[-1] if errors else "the model worker keeps crashing"


def start_torchserve(source: Source, run_dir: Path, *, name: str, host: str = process.HOST, port: int = 8080,
                     batching: Batching = Batching(), threads: int = 1, max_new_tokens: int = 0, ready_timeout: float = 240.0):
    """Archive a model folder with the text handler, start TorchServe, wait until its workers are ready.

    Returns (process, process.Server, {"inference": key, "management": key})."""
    java_check()
    process.require_ports(ports(port), host)
    model, tokenizer = load_eager(source)
    meta = serve_meta(source, tokenizer, model, for_source(source, max_new_tokens), threads)
    del model
    files = [p for p in sorted(source.model_dir.iterdir()) if p.is_file()]
    store = build_mar(source.name, TEXT_HANDLER, files, meta, run_dir)
    return launch(store, source.name, run_dir, name=name, host=host, port=port, batching=batching, ready_timeout=ready_timeout)


def ports(port: int, file_front: bool = False) -> list[int]:
    """Inference, management, metrics, gRPC x2; behind the file front TorchServe's own inference API is on port+5."""
    return [port + i for i in range(6 if file_front else 5)]


def launch(store: Path, model: str, run_dir: Path, *, name: str, host: str, port: int, batching: Batching,
           ready_timeout: float, max_request_size: int = 2**20, file_front: bool = False):
    """Start TorchServe over `store` (token auth on) as server `name`; wait until `model` is ready.

    file_front: lab's FileFront (gateway.py) takes `port` and TorchServe's inference API moves to loopback
    port+5; the front sends any body on as a file and answers a missing or wrong token with 401."""
    run_dir, store = run_dir.resolve(), store.resolve()  # TorchServe runs in run_dir: relative paths would break
    props = run_dir / "config.properties"
    behind = f"{process.HOST}:{port + 5}" if file_front else None
    write_properties(props, store, model, host, port, batching, max_request_size, inference=behind)
    log = run_dir / "server.log"
    # Short: workers put AF_UNIX sockets here (108-byte path limit); also holds TorchServe's pid file.
    tmp = Path(tempfile.mkdtemp(prefix="lab-ts-"))
    env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(run_dir / "ts_log"),
           "METRICS_LOCATION": str(run_dir / "ts_log")}
    torchserve = Path(sys.executable).parent / "torchserve"
    cmd = [str(torchserve), "--start", "--foreground", "--ts-config", str(props), "--model-store", str(store),
           "--ncs", "--models", f"{model}={model}.mar"]
    if file_front:
        cmd = [sys.executable, str(HERE / "gateway.py"), f"--listen={host}:{port}", f"--upstream={behind}",
               f"--files={run_dir / 'key_file.json'}", "--", *cmd]
    proc = process.start(cmd, log=log, env=env, cwd=run_dir)
    endpoints = {"http": f"http://{host}:{port}", "management": f"http://{host}:{port + 1}",
                 "metrics": f"http://{host}:{port + 2}/metrics", "grpc": f"{host}:{port + 3}",
                 "predict": f"http://{host}:{port}/predictions/{model}", "key_file": str(run_dir / "key_file.json")}
    if file_front:
        endpoints["torchserve_http"] = f"http://{behind}"
    server = process.Server(name=name, backend="torchserve", pid=proc.pid, pgid=proc.pid, endpoints=endpoints,
                            run_dir=str(run_dir), log=str(log), tmp_dir=str(tmp))
    server.save()
    (run_dir / "key_file.json").unlink(missing_ok=True)
    try:
        keys = read_keys(run_dir, proc, log, ready_timeout)
        process.wait_ready(proc, f"{endpoints['http']}/ping", log, ready_timeout, "TorchServe",
                           f"check Java 17 and {INSTALL_HINT}", headers={"Authorization": f"Bearer {keys['inference']}"})
        auth = {"Authorization": f"Bearer {keys['management']}"}
        ready_s = process.wait_ready(proc, f"{endpoints['management']}/models/{model}", log, ready_timeout,
                                     "TorchServe model", "see ts_log/ in the run folder", headers=auth,
                                     check=lambda body: '"READY"' in body, failed=lambda: worker_failure(run_dir))
    except BaseException:
        process.stop_server(server)
        raise
    server.endpoints["ready_s"] = round(ready_s, 2)
    server.save()
    return proc, server, keys


def smoke_test(source: Source, server: process.Server, keys: dict, max_new_tokens: int = 0) -> dict:
    """Translate a sample through the server and compare with transformers' generate, decoding as the run did."""
    from labcli.serving.clients import post_json

    model, tokenizer = load_eager(source)
    expected = eager_generate(model, tokenizer, SAMPLE_TEXTS[:1], for_source(source, max_new_tokens))[0]
    status, body = post_json(server.endpoints["predict"], {"text": SAMPLE_TEXTS[0]}, {"Authorization": f"Bearer {keys['inference']}"})
    got = json.loads(body).get("text") if status == 200 else None
    if got != expected:
        raise UserError(f"smoke test: TorchServe answered {status} {body[:200]!r}, eager gives {expected!r}", f"see {server.log}")
    return {"input": SAMPLE_TEXTS[0], "status": status, "text": got, "eager": expected, "text_match": True}
