"""`lab serve triton`: a run's model behind NVIDIA Triton Inference Server (KServe v2 over HTTP and gRPC).

Builds a model repository from the checked ONNX bundle: `<name>_text` (text in -> greedy text
out) and `<name>_logits` (token ids in -> logits out), both Python-backend models running
onnxruntime, with dynamic batching, max_batch_size and instance groups in config.pbtxt.
local: the tritonserver binary bundled in nvidia-pytriton (Triton 2.51, Python backend only),
run from its own numpy<2 environment, with lab's HTTP front (gateway.py) on --port so that a body
that is not JSON gets a 400 rather than Triton's 500; Triton's own HTTP listens on loopback port+3.
docker: the NGC container over the same repository.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.runs import Run
from labcli.serving import process
from labcli.serving.export import TOLERANCE, export_bundle, read_json, read_sample
from labcli.serving.source import resolve

HERE = Path(__file__).parent
NGC_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, the version nvidia-pytriton 0.7 bundles


class Config(RecipeConfig):
    run: str = Field("", description="Training run folder to serve (holds model/ and summary.json)")
    model: str = Field("", description="Or a save_pretrained folder, or a tiny-* preset (tiny-mbart, tiny-gpt2, ...)")
    port: int = Field(8000, description="HTTP port; gRPC uses port+1, metrics port+2, Triton's own HTTP (behind the gateway) port+3")
    host: str = Field("127.0.0.1", description="Address to bind (loopback by default; 0.0.0.0 exposes it to the network)")
    launcher: Literal["local", "docker"] = Field("local", description="local: bundled tritonserver; docker: NGC container")
    dry_run: bool = Field(False, description="docker launcher: print the command without running it")
    detach: bool = Field(False, description="Leave the server running in the background; stop it with `lab serve stop`")
    gateway: bool = Field(True, description="HTTP through lab's front, which answers malformed JSON with 400 (Triton 2.51 "
                          "says 500); false: Triton's own HTTP on --port")
    setup: bool = Field(False, description="Create the Triton environment first (labcli/serving/setup_triton_env.sh)")
    dynamic_batching: bool = Field(True, description="Let Triton group concurrent requests into one batch")
    max_batch_size: int = Field(16, ge=1, le=1024, description="Largest batch Triton forms (and accepts) per model")
    queue_delay_us: int = Field(2000, ge=0, description="Dynamic batching: how long a request may wait for others (microseconds)")
    instances: int = Field(1, ge=1, le=16, description="Model instances per model (instance_group count, KIND_CPU)")
    threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads per instance")
    max_new_tokens: int = Field(32, ge=1, le=1024, description="Greedy decoding length limit")
    ready_timeout: float = Field(180.0, gt=0, description="Seconds to wait for the server to report ready")
    smoke: bool = Field(True, description="After start: infer over HTTP and gRPC and compare with eager")


def triton_env() -> Path:
    """The numpy<2 environment: $LAB_TRITON_ENV, else <repo>/.venv-triton, else LAB_HOME/triton-env."""
    if os.environ.get("LAB_TRITON_ENV"):
        return Path(os.environ["LAB_TRITON_ENV"])
    repo = HERE.parent.parent
    if (repo / "pyproject.toml").is_file():
        return repo / ".venv-triton"
    from labcli.paths import lab_home

    return lab_home() / "triton-env"


def setup_env(env: Path) -> None:
    code = subprocess.call(["bash", str(HERE / "setup_triton_env.sh"), str(env)])
    if code != 0:
        raise UserError(f"creating the Triton environment in {env} failed (exit {code})", "read the lines above, then rerun with --setup")


def tritonserver_paths(env: Path) -> tuple[Path, Path]:
    """(tritonserver binary, backend directory) inside the Triton environment."""
    root = env / "lib" / "python3.11" / "site-packages" / "pytriton" / "tritonserver"
    binary, backends = root / "bin" / "tritonserver", root / "backends"
    if not binary.is_file() or not (backends / "python" / "triton_python_backend_stub").is_file():
        raise UserError(f"no Triton server in {env}",
                        "run `make install` (it calls labcli/serving/setup_triton_env.sh) or `lab serve triton --setup`")
    return binary, backends


def model_config(name: str, kind: str, task: str, vocab: int, cfg) -> str:
    """config.pbtxt for one Python-backend model."""
    if kind == "text":
        io = ('input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
              'output [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]')
    else:
        names = ["input_ids", "attention_mask"] + (["decoder_input_ids"] if task == "seq2seq" else [])
        inputs = ",\n  ".join(f'{{ name: "{n}" data_type: TYPE_INT64 dims: [ -1 ] }}' for n in names)
        io = f'input [\n  {inputs}\n]\noutput [ {{ name: "logits" data_type: TYPE_FP32 dims: [ -1, {vocab} ] }} ]'
    batching = ""
    if cfg.dynamic_batching:
        batching = f"dynamic_batching {{ max_queue_delay_microseconds: {cfg.queue_delay_us} }}\n"
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: {cfg.max_batch_size}\n{io}\n{batching}'
            f"instance_group [ {{ count: {cfg.instances} kind: KIND_CPU }} ]\n"
            f'parameters [ {{ key: "kind" value: {{ string_value: "{kind}" }} }},\n'
            f'  {{ key: "threads" value: {{ string_value: "{cfg.threads}" }} }} ]\n')


def build_repository(bundle: Path, repo: Path, name: str, cfg, suffix: str = "") -> dict[str, str]:
    """Write `<name>_text` and `<name>_logits` into `repo`; returns {kind: model name}."""
    from labcli import runs
    from labcli.recipes.serve.onnx import link_tree

    meta = read_json(bundle / "meta.json")
    models = {}
    for kind in ("text", "logits"):
        model = f"{name}_{kind}{suffix}"
        version = repo / model / "1"
        link_tree(bundle, version / "bundle")
        shutil.copy2(HERE / "triton_model.py", version / "model.py")
        shutil.copy2(HERE / "greedy.py", version / "greedy.py")
        runs.write_text(repo / model / "config.pbtxt", model_config(model, kind, meta["task"], meta["vocab_size"], cfg))
        models[kind] = model
    return models


def local_command(binary: Path, backends: Path, repo: Path, host: str, port: int, http: tuple[str, int]) -> list[str]:
    return [str(binary), f"--model-repository={repo}", f"--backend-directory={backends}",
            f"--cache-directory={backends.parent / 'caches'}",
            f"--http-address={http[0]}", f"--http-port={http[1]}", f"--grpc-address={host}", f"--grpc-port={port + 1}",
            "--allow-metrics=true", "--allow-gpu-metrics=false", f"--metrics-address={host}", f"--metrics-port={port + 2}",
            "--strict-readiness=true", "--exit-on-error=true", "--exit-timeout-secs=10", "--log-verbose=0"]


def local_env(env: Path) -> dict:
    """PATH starts with the numpy<2 environment (the stub imports numpy from the first python there)."""
    out = dict(os.environ)
    out["PATH"] = f"{env / 'bin'}:{out.get('PATH', '')}"
    out["VIRTUAL_ENV"] = str(env)
    out.pop("PYTHONPATH", None)
    out.pop("PYTHONHOME", None)
    return out


def docker_command(repo: Path, host: str, port: int, http: tuple[str, int]) -> list[str]:
    """The NGC container over the same repository; it adds what the Python-backend model imports."""
    inner = ("pip install -q 'numpy<2' onnxruntime-gpu tokenizers && "
             "tritonserver --model-repository=/models --strict-readiness=true --exit-on-error=true")
    return ["docker", "run", "--rm", "--gpus=all", "--shm-size=1g",
            "-p", f"{http[0]}:{http[1]}:8000", "-p", f"{host}:{port + 1}:8001", "-p", f"{host}:{port + 2}:8002",
            "-v", f"{repo.resolve()}:/models", NGC_IMAGE, "bash", "-c", inner]


def triton_http(cfg) -> tuple[str, int]:
    """Where Triton's own HTTP listens: loopback port+3 behind the gateway, else --host:--port."""
    return (process.HOST, cfg.port + 3) if cfg.gateway else (cfg.host, cfg.port)


def behind_gateway(cfg, server_cmd: list[str]) -> list[str]:
    """With the gateway, the front listens on --port and runs the server as its child (one process group)."""
    if not cfg.gateway:
        return server_cmd
    host, port = triton_http(cfg)
    return [sys.executable, "-m", "labcli.serving.gateway", f"--listen={cfg.host}:{cfg.port}",
            f"--upstream={host}:{port}", "--", *server_cmd]


def ports(cfg) -> list[int]:
    return [cfg.port, cfg.port + 1, cfg.port + 2] + ([cfg.port + 3] if cfg.gateway else [])


def start_triton(cfg, repo: Path, log: Path, name: str, run_dir: Path) -> tuple[subprocess.Popen, process.Server]:
    """Start the local server over `repo` and wait until it and its models are ready."""
    env = triton_env()
    if cfg.setup:
        setup_env(env)
    binary, backends = tritonserver_paths(env)
    process.require_ports(ports(cfg), cfg.host)
    cmd = behind_gateway(cfg, local_command(binary, backends, repo, cfg.host, cfg.port, triton_http(cfg)))
    proc = process.start(cmd, log=log, env=local_env(env))
    endpoints = {"http": f"http://{cfg.host}:{cfg.port}", "grpc": f"{cfg.host}:{cfg.port + 1}",
                 "metrics": f"http://{cfg.host}:{cfg.port + 2}/metrics"}
    server = process.Server(name=name, backend="triton", pid=proc.pid, pgid=proc.pid, endpoints=endpoints,
                            run_dir=str(run_dir), log=str(log))
    if cfg.gateway:
        endpoints["triton_http"] = "http://{}:{}".format(*triton_http(cfg))
    server.save()
    try:
        ready_s = process.wait_ready(proc, f"{endpoints['http']}/v2/health/ready", log, cfg.ready_timeout, "tritonserver",
                                     f"see {log}; rerun with --setup if the environment is broken")
    except BaseException:
        process.stop_server(server)
        raise
    server.endpoints["ready_s"] = round(ready_s, 2)
    server.save()
    return proc, server


def run(cfg: Config, ctx: Run) -> None:
    source = resolve(cfg.run, cfg.model)
    bundle = export_bundle(source, cfg.max_new_tokens)
    repo = ctx.path("model_repository")
    models = build_repository(bundle, repo, source.name, cfg)
    if cfg.launcher == "docker":
        return run_docker(cfg, ctx, repo, models)

    log = ctx.path("server.log")
    proc, server = start_triton(cfg, repo, log, f"triton-{cfg.port}", ctx.dir)
    with process.stopped_on_error(server):
        smoke = smoke_test(server.endpoints, models, bundle) if cfg.smoke else {}
        finish(cfg, ctx, source, server, models, smoke, repo)
    if not cfg.detach:
        process.serve_foreground(proc, server)


def finish(cfg: Config, ctx: Run, source, server: process.Server, models: dict, smoke: dict, repo: Path) -> None:
    """Write the summary and report, print the endpoints."""
    summary = {"backend": "triton", "task": source.task, "model_dir": str(source.model_dir), "models": models,
               "endpoints": server.endpoints, "repository": str(repo), "smoke": smoke, "detached": cfg.detach,
               "dynamic_batching": cfg.dynamic_batching, "max_batch_size": cfg.max_batch_size, "instances": cfg.instances}
    ctx.write_summary(summary)
    ctx.write_report(report(summary))
    print_endpoints(server, models, smoke)
    if cfg.detach:
        print(f"running in the background (pid {server.pid}); stop it with: lab serve stop --name {server.name}")


def run_docker(cfg: Config, ctx: Run, repo: Path, models: dict) -> None:
    cmd = behind_gateway(cfg, docker_command(repo, cfg.host, cfg.port, triton_http(cfg)))
    line = shlex.join(cmd)
    ctx.write_summary({"backend": "triton", "launcher": "docker", "command": line, "models": models, "repository": str(repo)})
    ctx.write_report(f"# Triton in docker\n\n```\n{line}\n```\n\nModels: {', '.join(models.values())}\n")
    print(line)
    if cfg.dry_run:
        return
    if shutil.which("docker") is None:
        raise UserError("docker is not installed", "install Docker and the NVIDIA Container Toolkit, or use --launcher local")
    process.require_ports(ports(cfg), cfg.host)
    code = subprocess.call(cmd)
    if code != 0:
        raise UserError(f"docker exited with code {code}", "is the Docker daemon running and can it pull " + NGC_IMAGE + "?")


def smoke_test(endpoints: dict, models: dict, bundle: Path) -> dict:
    """Text and logits over HTTP and gRPC, compared with the eager outputs saved at export time."""
    import numpy as np

    from labcli.serving import clients

    parity = read_json(bundle / "parity.json")
    sample = read_sample(bundle)
    text_in = parity["samples"][0]["input"]
    expected_text = parity["samples"][0]["eager"]
    out = {"input": text_in, "eager": expected_text}
    for protocol in ("http", "grpc"):
        client = clients.TritonClient(endpoints, protocol)
        got = client.text(models["text"], [text_in])[0]
        logits = client.logits(models["logits"], {k: v for k, v in sample.items() if k != "logits"})
        diff = float(np.abs(logits - sample["logits"]).max())
        out[protocol] = {"text": got, "text_match": got == expected_text, "logits_max_abs_diff": diff}
        client.close()
        if got != expected_text or diff > TOLERANCE:
            raise UserError(f"smoke test over {protocol}: served output differs from eager (text {got!r} vs {expected_text!r}, "
                            f"max |logits diff| {diff:.1e})", "see the server log in the run folder")
    return out


def print_endpoints(server: process.Server, models: dict, smoke: dict) -> None:
    e = server.endpoints
    print(f"Triton ready in {e.get('ready_s', '?')}s")
    print(f"  HTTP     {e['http']}/v2/models/{models['text']}/infer   (KServe v2)")
    print(f"  gRPC     {e['grpc']}")
    print(f"  metrics  {e['metrics']}")
    for protocol in ("http", "grpc"):
        if protocol in smoke:
            s = smoke[protocol]
            print(f"  smoke {protocol:<4} {smoke['input']!r} -> {s['text']!r} (matches eager: {s['text_match']}); "
                  f"logits max |diff| {s['logits_max_abs_diff']:.1e}")
    print(f"  try: curl -s -X POST {e['http']}/v2/models/{models['text']}/infer -d "
          "'{\"inputs\":[{\"name\":\"TEXT\",\"shape\":[1,1],\"datatype\":\"BYTES\",\"data\":[\"hello world\"]}]}'")


def report(summary: dict) -> str:
    e, smoke = summary["endpoints"], summary["smoke"]
    lines = [f"# Triton serving `{summary['model_dir']}`", "",
             f"- models: {', '.join(summary['models'].values())} (Python backend, onnxruntime); repository `{summary['repository']}`",
             f"- dynamic batching: {summary['dynamic_batching']}, max_batch_size {summary['max_batch_size']}, instances {summary['instances']}",
             f"- endpoints: HTTP {e['http']}, gRPC {e['grpc']}, metrics {e['metrics']} (ready in {e.get('ready_s')} s)", ""]
    if smoke:
        lines += ["| protocol | input | served text | eager text | logits max abs diff |", "| --- | --- | --- | --- | ---: |"]
        lines += [f"| {p} | {smoke['input']} | {smoke[p]['text']} | {smoke['eager']} | {smoke[p]['logits_max_abs_diff']:.2e} |"
                  for p in ("http", "grpc")]
    return "\n".join(lines) + "\n"
