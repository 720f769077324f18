"""`lab serve streamlit --run DIR`: the Streamlit translation app on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.runs import Run

APP = Path(__file__).parent / "apps" / "streamlit_translate.py"


class Config(RecipeConfig):
    run: str | None = Field(None, description="A finished `lab finetune newari` run folder")
    host: str = Field("127.0.0.1", description="Bind address (loopback by default)")
    port: int = Field(8501, ge=1, le=65535, description="Port")


def check_run(run_dir: str | None) -> Path:
    if not run_dir:
        raise UserError("no run given", "pass --run DIR (a finished `lab finetune newari` run)")
    path = Path(run_dir)
    for need in ("model/config.json", "summary.json", "config.yaml"):
        if not (path / need).exists():
            raise UserError(f"{path} has no {need}", "pass a finished `lab finetune newari` run folder")
    return path


def run(cfg: Config, ctx: Run) -> None:
    from labcli.serving.process import require_ports

    path = check_run(cfg.run)
    require_ports([cfg.port], cfg.host)
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", cfg.host,
           "--server.port", str(cfg.port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    ctx.write_summary({"app": "streamlit", "run": str(path), "url": f"http://{cfg.host}:{cfg.port}"})
    ctx.write_report(f"# Streamlit app\n\nServing `{path}` at http://{cfg.host}:{cfg.port} (Ctrl-C stops it).\n")
    print(f"translation app for {path} at http://{cfg.host}:{cfg.port}  (Ctrl-C to stop)")
    try:
        subprocess.call(cmd, env={**os.environ, "LAB_RUN_DIR": str(path.resolve())})
    except KeyboardInterrupt:
        pass
