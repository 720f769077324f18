"""`lab serve torchserve`: a run's model behind TorchServe (second backend; TorchServe is archived,
limited maintenance since 2025-08, so Triton is the main path).

Builds a .mar with a custom text handler (transformers, eager, greedy), writes an explicit
config.properties that binds every listener (inference --port, management port+1, metrics port+2,
gRPC port+3 and port+4) to --host, and keeps TorchServe's token authorization ON: the keys are in
RUN/key_file.json and clients send `Authorization: Bearer <inference key>`. Prometheus metrics stay
open on the metrics port. The smoke test compares a served translation with eager generate.
"""

from __future__ import annotations

from pydantic import Field

from labcli.eval.tables import markdown_table
from labcli.runs import Run
from labcli.serving import process
from labcli.serving.settings import ModelServerSettings
from labcli.serving.source import plan as source_plan
from labcli.serving.source import resolve
from labcli.serving.torchserve import (
    Batching,
    java_check,
    java_problem,
    smoke_test,
    start_torchserve,
)


class Config(ModelServerSettings):
    batch_size: int = Field(8, ge=1, le=256, description="TorchServe server-side batching: largest batch per worker call")
    max_batch_delay_ms: int = Field(5, ge=0, description="How long TorchServe waits to fill a batch (milliseconds)")
    workers: int = Field(1, ge=1, le=16, description="Python worker processes for the model")


def check(cfg: Config) -> list[str]:
    """For `lab check`: TorchServe needs Java and its Python modules."""
    return [p for p in (java_problem(),) if p]



def plan(cfg: Config) -> str:
    """For `lab check`: what will be served (the default run when none is given)."""
    return source_plan("TorchServe serves", cfg.run, cfg.model)


def run(cfg: Config, ctx: Run) -> None:
    java_check()  # what can fail in a second fails before the model loads
    process.require_ports([cfg.port + i for i in range(5)], cfg.host)
    source = resolve(cfg.run, cfg.model)
    proc, server, keys = start_torchserve(source, ctx.dir, name=f"torchserve-{cfg.port}", host=cfg.host, port=cfg.port,
                                          batching=Batching(cfg.batch_size, cfg.max_batch_delay_ms, cfg.workers),
                                          threads=cfg.threads, max_new_tokens=cfg.max_new_tokens, ready_timeout=cfg.ready_timeout)
    with process.stopped_on_error(server):
        smoke = smoke_test(source, server, keys, cfg.max_new_tokens) if cfg.smoke else {}
        summary = {"backend": "torchserve", "task": source.task, "model_dir": str(source.model_dir), "model": source.name,
                   "endpoints": server.endpoints, "token_auth": True, "smoke": smoke, "detached": cfg.detach,
                   "batch_size": cfg.batch_size, "workers": cfg.workers}
        ctx.write_summary(summary)
        ctx.write_report(report(summary))
        print_headline(server, smoke)
        if cfg.detach:
            print(f"running in the background (pid {server.pid}); stop it with: lab serve stop --name {server.name}")
    if not cfg.detach:
        process.serve_foreground(proc, server)


def print_headline(server: process.Server, smoke: dict) -> None:
    e = server.endpoints
    print(f"TorchServe ready in {e['ready_s']}s (token auth on; keys in {e['key_file']})")
    print(f"  predict  {e['predict']}")
    print(f"  manage   {e['management']}    metrics {e['metrics']}    gRPC {e['grpc']}")
    if smoke:
        print(f"  smoke    {smoke['input']!r} -> {smoke['text']!r} (matches eager: {smoke['text_match']})")
    print(f"  try: curl -s -H \"Authorization: Bearer $(jq -r .inference.key {e['key_file']})\" -H 'Content-Type: application/json' "
          f"-d '{{\"text\": \"hello world\"}}' {e['predict']}")


def report(summary: dict) -> str:
    e, smoke = summary["endpoints"], summary["smoke"]
    lines = [f"# TorchServe serving `{summary['model_dir']}`", "",
             "TorchServe is archived (limited maintenance since 2025-08); Triton is lab's main serving path.", "",
             f"- predict: `POST {e['predict']}` with `{{\"text\": ...}}` and `Authorization: Bearer <inference key>`",
             f"- token authorization: on; keys in `{e['key_file']}` (expire after 24 h, restart to renew)",
             f"- management {e['management']}, metrics {e['metrics']} (Prometheus), gRPC {e['grpc']}; all on the host in config.properties",
             f"- batching: batch_size {summary['batch_size']}, workers {summary['workers']}; ready in {e.get('ready_s')} s", ""]
    if smoke:
        lines.append(markdown_table([{"input": smoke["input"], "served": smoke["text"], "eager": smoke["eager"],
                                      "match": smoke["text_match"]}]))
    return "\n".join(lines) + "\n"
