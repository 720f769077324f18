"""`lab serve streamlit --run DIR`: the Streamlit translation app for a newari run, on --host:--port.

Streamlit runs in its own process group (Ctrl-C, or `lab serve stop` after --detach, ends it and
every child). Ready when Streamlit's /_stcore/health answers. The smoke test translates a sample
with the run's translator, loaded by the same code the app calls (labcli.serving.source.load_translator),
in lab's own process; the page itself is checked by tests/recipes/serve/test_streamlit.py (AppTest).
"""

from __future__ import annotations

import os
import sys

from labcli.runs import Run
from labcli.serving import process
from labcli.serving.apps import TRANSLATE
from labcli.serving.decoding import describe
from labcli.serving.settings import ServerSettings
from labcli.serving.source import load_translator, translation_run
from labcli.serving.source import plan as source_plan

SAMPLE = "How are you?"


class Config(ServerSettings):
    """--run: a finished `lab finetune newari` run folder."""



def plan(cfg: Config) -> str:
    """For `lab check`: what will be served (the default run when none is given)."""
    return source_plan("the app translates with", cfg.run)


def run(cfg: Config, ctx: Run) -> None:
    path = translation_run(cfg.run)
    process.require_ports([cfg.port], cfg.host)
    smoke = {}
    if cfg.smoke:
        translator = load_translator(path)
        smoke = {"input": SAMPLE, "output": translator.translate(SAMPLE), "decoding": describe(translator.decoding)}
        del translator
    cmd = [sys.executable, "-m", "streamlit", "run", str(TRANSLATE), "--server.address", cfg.host, "--server.port", str(cfg.port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    env = {**os.environ, "LAB_RUN_DIR": str(path.resolve()), "LAB_THREADS": str(cfg.threads)}
    log = ctx.path("server.log")
    proc = process.start(cmd, log=log, env=env)
    url = f"http://{cfg.host}:{cfg.port}"
    server = process.Server(name=f"streamlit-{cfg.port}", backend="streamlit", pid=proc.pid, pgid=proc.pid,
                            endpoints={"http": url}, run_dir=str(ctx.dir), log=str(log))
    server.save()
    with process.stopped_on_error(server):
        ready_s = process.wait_ready(proc, f"{url}/_stcore/health", log, cfg.ready_timeout, "streamlit", f"see {log}")
        server.endpoints["ready_s"] = round(ready_s, 2)
        server.save()
        ctx.write_summary({"app": "streamlit", "run": str(path), "url": url, "ready_s": round(ready_s, 2), "smoke": smoke,
                           "detached": cfg.detach})
        ctx.write_report(f"# Streamlit app\n\nServing `{path}` at {url} (ready in {ready_s:.1f} s).\n\n"
                         + (f"Smoke: {smoke['input']!r} -> {smoke['output']!r} (the app's translator, in lab's process)\n" if smoke else ""))
        print(f"translation app for {path} at {url} (ready in {ready_s:.1f}s)")
        if smoke:
            print(f"  smoke    {smoke['input']!r} -> {smoke['output']!r} (the app's translator: {smoke['decoding']}, as the run's evaluation)")
        if cfg.detach:
            print(f"running in the background (pid {server.pid}); stop it with: lab serve stop --name {server.name}")
    if not cfg.detach:
        process.serve_foreground(proc, server)
