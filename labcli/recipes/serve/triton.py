"""`lab serve triton`: a run's model behind NVIDIA Triton Inference Server (KServe v2 over HTTP and gRPC).

Exports the run's model to a checked ONNX bundle, builds a model repository (`<name>_text`: text in
-> greedy text out; `<name>_logits`: token ids in -> next-token logits out; Python backend,
onnxruntime, dynamic batching), starts Triton, waits until ready, sends a smoke request over HTTP
and gRPC and compares it with eager, then serves until Ctrl-C (or detaches). Ports: --port HTTP,
port+1 gRPC, port+2 metrics, port+3 Triton's own HTTP when lab's front is on (--gateway).

lab's HTTP front (gateway.py, off by default, --gateway turns it on) checks each KServe v2 body
against the model's declared inputs before Triton sees it and answers malformed ones with 400:
Triton 2.51 answers unparsable JSON and many malformed tensors with 500, and one (a huge free
dimension) aborts it. It is off by default because it cost more than 10 % of direct throughput at
32 clients (docs/results/serve.md); turn it on when untrusted clients reach the port.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Literal

from pydantic import Field

from labcli.errors import UserError
from labcli.eval.tables import markdown_table
from labcli.runs import Run
from labcli.serving import process
from labcli.serving.decoding import for_source
from labcli.serving.export import export_bundle
from labcli.serving.settings import ModelServerSettings
from labcli.serving.source import plan as source_plan
from labcli.serving.source import resolve
from labcli.serving.triton import (
    NGC_IMAGE,
    ModelOptions,
    behind_gateway,
    build_repository,
    docker_command,
    env_problem,
    ports,
    prepare_local,
    smoke_test,
    start_triton,
    triton_http,
)


class Config(ModelServerSettings):
    launcher: Literal["local", "docker"] = Field("local", description="local: bundled tritonserver; docker: NGC container")
    dry_run: bool = Field(False, description="docker launcher: print the command without running it")
    gateway: bool = Field(False, description="HTTP through lab's front, which answers malformed KServe v2 bodies with 400 (Triton "
                          "2.51 answers unparsable JSON and some tensors with 500, one aborts it); off: Triton's own HTTP on --port "
                          "(the front costs ~40 % of requests/s at 32 clients on tiny models, docs/results/serve.md)")
    setup: bool = Field(False, description="Create the Triton environment first (labcli/serving/setup_triton_env.sh)")
    dynamic_batching: bool = Field(True, description="Let Triton group concurrent requests into one batch")
    max_batch_size: int = Field(16, ge=1, le=1024, description="Largest batch Triton forms (and accepts) per model")
    queue_delay_us: int = Field(2000, ge=0, description="Dynamic batching: how long a request may wait for others (microseconds)")
    instances: int = Field(1, ge=1, le=16, description="Model instances per model (instance_group count, KIND_CPU)")


def check(cfg: Config) -> list[str]:
    """For `lab check`: the local launcher needs the Triton environment."""
    problem = env_problem() if cfg.launcher == "local" and not cfg.setup else None
    return [problem] if problem else []



def plan(cfg: Config) -> str:
    """For `lab check`: what will be served (the default run when none is given)."""
    return source_plan("Triton serves", cfg.run, cfg.model)


def run(cfg: Config, ctx: Run) -> None:
    if cfg.launcher == "local":  # what can fail in a second fails before the export
        prepare_local(setup=cfg.setup)
        process.require_ports(ports(cfg.port, cfg.gateway), cfg.host)
    source = resolve(cfg.run, cfg.model)
    bundle = export_bundle(source, for_source(source, cfg.max_new_tokens))
    repo = ctx.path("model_repository")
    options = ModelOptions(cfg.dynamic_batching, cfg.max_batch_size, cfg.queue_delay_us, cfg.instances, cfg.threads)
    models = build_repository(bundle, repo, source.name, options)
    if cfg.launcher == "docker":
        return run_docker(cfg, ctx, repo, models)

    proc, server = start_triton(repo, name=f"triton-{cfg.port}", run_dir=ctx.dir, host=cfg.host, port=cfg.port,
                                gateway=cfg.gateway, ready_timeout=cfg.ready_timeout, setup=cfg.setup)
    with process.stopped_on_error(server):
        smoke = smoke_test(server.endpoints, models, bundle) if cfg.smoke else {}
        summary = {"backend": "triton", "task": source.task, "model_dir": str(source.model_dir), "models": models,
                   "endpoints": server.endpoints, "repository": str(repo), "smoke": smoke, "detached": cfg.detach,
                   "gateway": cfg.gateway, "dynamic_batching": cfg.dynamic_batching, "max_batch_size": cfg.max_batch_size,
                   "instances": cfg.instances}
        ctx.write_summary(summary)
        ctx.write_report(report(summary))
        print_headline(server, models, smoke)
        if cfg.detach:
            print(f"running in the background (pid {server.pid}); stop it with: lab serve stop --name {server.name}")
    if not cfg.detach:
        process.serve_foreground(proc, server)


def run_docker(cfg: Config, ctx: Run, repo: Path, models: dict) -> None:
    cmd = behind_gateway(docker_command(repo, cfg.host, cfg.port, triton_http(cfg.host, cfg.port, cfg.gateway)),
                         cfg.host, cfg.port, cfg.gateway)
    line = shlex.join(cmd)
    ctx.write_summary({"backend": "triton", "launcher": "docker", "command": line, "models": models, "repository": str(repo)})
    ctx.write_report(f"# Triton in docker\n\n```\n{line}\n```\n\nModels: {', '.join(models.values())}\n")
    print(line)
    if cfg.dry_run:
        return
    if shutil.which("docker") is None:
        raise UserError("docker is not installed", "install Docker and the NVIDIA Container Toolkit, or use --launcher local")
    process.require_ports(ports(cfg.port, cfg.gateway), cfg.host)
    code = subprocess.call(cmd)
    if code != 0:
        raise UserError(f"docker exited with code {code}", "is the Docker daemon running and can it pull " + NGC_IMAGE + "?")


def smoke_rows(smoke: dict) -> list[dict]:
    return [{"protocol": p, "input": smoke["input"], "served text": smoke[p]["text"], "eager text": smoke["eager"],
             "text match": smoke[p]["text_match"], "logits max abs diff": smoke[p]["logits_max_abs_diff"]}
            for p in ("http", "grpc") if p in smoke]


def print_headline(server: process.Server, models: dict, smoke: dict) -> None:
    e = server.endpoints
    print(f"Triton ready in {e.get('ready_s', '?')}s")
    print(f"  HTTP     {e['http']}/v2/models/{models['text']}/infer   (KServe v2{', through lab front' if 'triton_http' in e else ''})")
    print(f"  gRPC     {e['grpc']}")
    print(f"  metrics  {e['metrics']}")
    for row in smoke_rows(smoke):
        print(f"  smoke {row['protocol']:<4} {row['input']!r} -> {row['served text']!r} (matches eager: {row['text match']}); "
              f"logits max |diff| {row['logits max abs diff']:.1e}")
    print(f"  try: curl -s -X POST {e['http']}/v2/models/{models['text']}/infer -d "
          "'{\"inputs\":[{\"name\":\"TEXT\",\"shape\":[1,1],\"datatype\":\"BYTES\",\"data\":[\"hello world\"]}]}'")


def report(summary: dict) -> str:
    e = summary["endpoints"]
    front = "lab's front (malformed bodies -> 400)" if summary["gateway"] else "Triton's own (some malformed bodies -> 500 or a crash)"
    lines = [f"# Triton serving `{summary['model_dir']}`", "",
             f"- models: {', '.join(summary['models'].values())} (Python backend, onnxruntime); repository `{summary['repository']}`",
             f"- dynamic batching: {summary['dynamic_batching']}, max_batch_size {summary['max_batch_size']}, instances {summary['instances']}",
             f"- endpoints: HTTP {e['http']} ({front}), gRPC {e['grpc']}, metrics {e['metrics']} (ready in {e.get('ready_s')} s)", ""]
    if summary["smoke"]:
        lines.append(markdown_table(smoke_rows(summary["smoke"])))
    return "\n".join(lines) + "\n"
