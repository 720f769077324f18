"""`lab serve torchserve`: a run's model behind TorchServe (second backend; TorchServe is archived,
limited maintenance since 2025-08, so Triton is the main path).

Builds a .mar with a custom text handler (transformers, eager, greedy), writes an explicit
config.properties that binds every listener (inference, management, metrics, both gRPC ports) to
127.0.0.1, and keeps TorchServe's token authorization ON: the keys are in RUN/key_file.json and
clients send `Authorization: Bearer <inference key>`. Prometheus metrics stay open on the metrics port.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pydantic import Field

from labcli import runs
from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.runs import Run
from labcli.serving import process
from labcli.serving.export import SAMPLE_TEXTS, eager_generate, load_eager
from labcli.serving.source import Source, resolve

HERE = Path(__file__).parent


class Config(RecipeConfig):
    run: str = Field("", description="Training run folder to serve (holds model/ and summary.json)")
    model: str = Field("", description="Or a save_pretrained folder, or a tiny-* preset (tiny-mbart, tiny-gpt2, ...)")
    port: int = Field(8080, description="Inference port; management port+1, metrics port+2, gRPC port+3 and port+4")
    host: str = Field("127.0.0.1", description="Address every listener binds (loopback by default)")
    detach: bool = Field(False, description="Leave the server running in the background; stop it with `lab serve stop`")
    batch_size: int = Field(8, ge=1, le=256, description="TorchServe server-side batching: largest batch per worker call")
    max_batch_delay_ms: int = Field(5, ge=0, description="How long TorchServe waits to fill a batch (milliseconds)")
    workers: int = Field(1, ge=1, le=16, description="Python worker processes for the model")
    threads: int = Field(1, ge=1, le=64, description="torch intra-op threads per worker")
    max_new_tokens: int = Field(32, ge=1, le=1024, description="Greedy decoding length limit")
    ready_timeout: float = Field(240.0, gt=0, description="Seconds to wait for the model's workers to be ready")
    smoke: bool = Field(True, description="After start: translate a sample and compare with eager generate")


def java_check() -> None:
    java = Path(os.environ["JAVA_HOME"]) / "bin" / "java" if os.environ.get("JAVA_HOME") else shutil.which("java")
    if not java or not Path(java).exists():
        raise UserError("TorchServe needs Java 11+ and no `java` was found",
                        "apt-get install openjdk-17-jre-headless (or set JAVA_HOME)")
    for module in ("ts", "model_archiver", "yaml"):
        try:
            __import__(module)
        except ImportError:
            raise UserError(f"python module '{module}' is missing (TorchServe workers crash-loop without it)",
                            "pip install torchserve torch-model-archiver pyyaml") from None


def serve_meta(source: Source, cfg, tokenizer, model) -> dict:
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None) or 512
    model_max = tokenizer.model_max_length if tokenizer.model_max_length < 1e9 else positions
    return {"task": source.task, "max_new_tokens": cfg.max_new_tokens, "threads": cfg.threads,
            "max_input_tokens": int(min(positions, model_max, 512))}


def build_mar(name: str, handler: Path, files: list[Path], meta: dict, work: Path) -> Path:
    """torch-model-archiver: handler + files + serve_meta.json -> work/model_store/<name>.mar; returns the store."""
    runs.write_json(work / "serve_meta.json", meta)
    store = work / "model_store"
    store.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "model_archiver.model_packaging", "--model-name", name, "--version", "1.0",
           "--handler", str(handler), "--extra-files", ",".join(str(p) for p in [*files, work / "serve_meta.json"]),
           "--export-path", str(store), "--archive-format", "default", "--force"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UserError(f"torch-model-archiver failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}",
                        "pip install torch-model-archiver")
    return store


def write_properties(path: Path, cfg, store: Path, name: str, port: int, max_request_size: int = 2**20) -> None:
    h = cfg.host
    models = {name: {"1.0": {"defaultVersion": True, "marName": f"{name}.mar", "minWorkers": cfg.workers,
                             "maxWorkers": cfg.workers, "batchSize": cfg.batch_size,
                             "maxBatchDelay": cfg.max_batch_delay_ms, "responseTimeout": 300}}}
    lines = [
        f"inference_address=http://{h}:{port}", f"management_address=http://{h}:{port + 1}",
        f"metrics_address=http://{h}:{port + 2}", f"grpc_inference_address={h}", f"grpc_inference_port={port + 3}",
        f"grpc_management_address={h}", f"grpc_management_port={port + 4}",
        f"model_store={store}", f"load_models={name}.mar", f"models={json.dumps(models)}",
        f"default_workers_per_model={cfg.workers}", "install_py_dep_per_model=false", "metrics_mode=prometheus",
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
                            "check Java 17 and `pip install torchserve torch-model-archiver pyyaml`")
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


def start_torchserve(cfg, source: Source, run_dir: Path, name: str):
    """Archive a model folder with the text handler, start TorchServe, wait until its workers are ready."""
    java_check()
    process.require_ports([cfg.port + i for i in range(5)], cfg.host)
    model, tokenizer = load_eager(source)
    meta = serve_meta(source, cfg, tokenizer, model)
    del model
    files = [p for p in sorted(source.model_dir.iterdir()) if p.is_file()]
    store = build_mar(source.name, HERE / "torchserve_handler.py", files, meta, run_dir)
    return launch(cfg, run_dir, store, source.name, name)


def launch(cfg, run_dir: Path, store: Path, model: str, name: str, max_request_size: int = 2**20):
    """Start TorchServe over `store` (loopback, token auth on) as server `name`; wait until `model` is ready."""
    props = run_dir / "config.properties"
    write_properties(props, cfg, store, model, cfg.port, max_request_size)
    log = run_dir / "server.log"
    # Short: workers put AF_UNIX sockets here (108-byte path limit); also holds TorchServe's pid file.
    tmp = Path(tempfile.mkdtemp(prefix="lab-ts-"))
    env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(run_dir / "ts_log"),
           "METRICS_LOCATION": str(run_dir / "ts_log")}
    torchserve = Path(sys.executable).parent / "torchserve"
    cmd = [str(torchserve), "--start", "--foreground", "--ts-config", str(props), "--model-store", str(store),
           "--ncs", "--models", f"{model}={model}.mar"]
    proc = process.start(cmd, log=log, env=env, cwd=run_dir)
    endpoints = {"http": f"http://{cfg.host}:{cfg.port}", "management": f"http://{cfg.host}:{cfg.port + 1}",
                 "metrics": f"http://{cfg.host}:{cfg.port + 2}/metrics", "grpc": f"{cfg.host}:{cfg.port + 3}",
                 "predict": f"http://{cfg.host}:{cfg.port}/predictions/{model}", "key_file": str(run_dir / "key_file.json")}
    server = process.Server(name=name, backend="torchserve", pid=proc.pid, pgid=proc.pid, endpoints=endpoints,
                            run_dir=str(run_dir), log=str(log), tmp_dir=str(tmp))
    server.save()
    (run_dir / "key_file.json").unlink(missing_ok=True)
    try:
        keys = read_keys(run_dir, proc, log, cfg.ready_timeout)
        process.wait_ready(proc, f"{endpoints['http']}/ping", log, cfg.ready_timeout, "TorchServe",
                           "check Java 17 and `pip install torchserve torch-model-archiver pyyaml`",
                           headers={"Authorization": f"Bearer {keys['inference']}"})
        auth = {"Authorization": f"Bearer {keys['management']}"}
        ready_s = process.wait_ready(proc, f"{endpoints['management']}/models/{model}", log, cfg.ready_timeout,
                                     "TorchServe model", "see ts_log/ in the run folder", headers=auth,
                                     check=lambda body: '"READY"' in body, failed=lambda: worker_failure(run_dir))
    except BaseException:
        process.stop_server(server)
        raise
    server.endpoints["ready_s"] = round(ready_s, 2)
    server.save()
    return proc, server, keys


def run(cfg: Config, ctx: Run) -> None:
    source = resolve(cfg.run, cfg.model)
    proc, server, keys = start_torchserve(cfg, source, ctx.dir, f"torchserve-{cfg.port}")
    with process.stopped_on_error(server):
        smoke = smoke_test(source, server, keys, cfg.max_new_tokens) if cfg.smoke else {}
        finish(cfg, ctx, source, server, smoke)
    if not cfg.detach:
        process.serve_foreground(proc, server)


def smoke_test(source: Source, server: process.Server, keys: dict, max_new_tokens: int) -> dict:
    """Translate a sample through the server and compare with transformers' greedy generate."""
    from labcli.serving.clients import post_json

    model, tokenizer = load_eager(source)
    expected = eager_generate(model, tokenizer, SAMPLE_TEXTS[:1], max_new_tokens)[0]
    status, body = post_json(server.endpoints["predict"], {"text": SAMPLE_TEXTS[0]}, {"Authorization": f"Bearer {keys['inference']}"})
    got = json.loads(body).get("text") if status == 200 else None
    if got != expected:
        raise UserError(f"smoke test: TorchServe answered {status} {body[:200]!r}, eager gives {expected!r}", f"see {server.log}")
    return {"input": SAMPLE_TEXTS[0], "status": status, "text": got, "eager": expected, "text_match": True}


def finish(cfg: Config, ctx: Run, source: Source, server: process.Server, smoke: dict) -> None:
    """Write the summary and report, print the endpoints."""
    summary = {"backend": "torchserve", "task": source.task, "model_dir": str(source.model_dir), "model": source.name,
               "endpoints": server.endpoints, "token_auth": True, "smoke": smoke, "detached": cfg.detach,
               "batch_size": cfg.batch_size, "workers": cfg.workers}
    ctx.write_summary(summary)
    ctx.write_report(report(summary))
    e = server.endpoints
    print(f"TorchServe ready in {e['ready_s']}s (token auth on; keys in {e['key_file']})")
    print(f"  predict  {e['predict']}")
    print(f"  manage   {e['management']}    metrics {e['metrics']}    gRPC {e['grpc']}")
    if smoke:
        print(f"  smoke    {smoke['input']!r} -> {smoke['text']!r} (matches eager: {smoke['text_match']})")
    print(f"  try: curl -s -H \"Authorization: Bearer $(jq -r .inference.key {e['key_file']})\" -H 'Content-Type: application/json' "
          f"-d '{{\"text\": \"hello world\"}}' {e['predict']}")
    if cfg.detach:
        print(f"running in the background (pid {server.pid}); stop it with: lab serve stop --name {server.name}")


def report(summary: dict) -> str:
    e, smoke = summary["endpoints"], summary["smoke"]
    lines = [f"# TorchServe serving `{summary['model_dir']}`", "",
             "TorchServe is archived (limited maintenance since 2025-08); Triton is lab's main serving path.", "",
             f"- predict: `POST {e['predict']}` with `{{\"text\": ...}}` and `Authorization: Bearer <inference key>`",
             f"- token authorization: on; keys in `{e['key_file']}` (expire after 24 h, restart to renew)",
             f"- management {e['management']}, metrics {e['metrics']} (Prometheus), gRPC {e['grpc']}; all on the host in config.properties",
             f"- batching: batch_size {summary['batch_size']}, workers {summary['workers']}; ready in {e.get('ready_s')} s", ""]
    if smoke:
        lines += ["| input | served | eager | match |", "| --- | --- | --- | --- |",
                  f"| {smoke['input']} | {smoke['text']} | {smoke['eager']} | {smoke['text_match']} |"]
    return "\n".join(lines) + "\n"
