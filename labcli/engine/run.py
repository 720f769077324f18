"""The run directory: `runs/<verb>-<recipe>-<time>/` with config, metrics, summary, report.

`Run` is what every recipe's `run(cfg, ctx)` receives as `ctx`. Only rank 0 writes files.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labcli.config import RecipeConfig, to_yaml
from labcli.engine import atomic
from labcli.errors import UserError
from labcli.paths import runs_root


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class Run:
    """A run's folder and what a recipe needs to know about how it was started."""

    dir: Path
    verb: str
    recipe: str
    cfg: RecipeConfig
    resume_from: Path | None = None  # a checkpoint folder to continue from, or None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dir = Path(self.dir)
        if is_rank0():
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic.write_text(self.dir / "config.yaml", to_yaml(self.cfg))

    @property
    def is_main(self) -> bool:
        """True on the process that writes results (rank 0, or the only one)."""
        return is_rank0()

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    def log(self, **record: Any) -> None:
        """Append one metrics record (rank 0 only)."""
        if is_rank0():
            atomic.append_jsonl(self.metrics_path, {"time": round(time.time(), 3), **record})

    def metrics(self) -> list[dict]:
        return atomic.read_jsonl(self.metrics_path)

    def write_summary(self, summary: dict) -> None:
        if is_rank0():
            atomic.write_json(self.dir / "summary.json", summary)

    def write_report(self, markdown: str) -> None:
        if is_rank0():
            atomic.write_text(self.dir / "report.md", markdown)

    def path(self, name: str) -> Path:
        return self.dir / name


def new_run_dir(verb: str, recipe: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = runs_root() / f"{verb}-{recipe}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (checkpoints/step-NNNNNNNN) of a run or of its sub-runs."""
    found = [p for pattern in ("checkpoints/step-*", "*/checkpoints/step-*") for p in Path(run_dir).glob(pattern)
             if (p / "COMPLETE").exists()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resolve_resume(resume: str | None, verb: str, recipe: str, output: Path | None) -> tuple[Path, Path | None]:
    """Pick the run folder and the checkpoint to resume from.

    `auto`: continue the newest `<verb>-<recipe>-*` run (or `--output`) that has a checkpoint;
    start fresh if there is none. A path: a run folder or a checkpoint folder.
    """
    if resume is None:
        return (output or new_run_dir(verb, recipe)), None
    if resume == "auto":
        candidates = [output] if output else sorted(runs_root().glob(f"{verb}-{recipe}-*"), key=lambda p: p.stat().st_mtime)
        for run_dir in reversed([c for c in candidates if c and c.is_dir()]):
            ckpt = latest_checkpoint(run_dir)
            if ckpt:
                return run_dir, ckpt
        return (output or new_run_dir(verb, recipe)), None
    path = Path(resume)
    if (path / "COMPLETE").exists():
        return output or path.parent.parent, path
    ckpt = latest_checkpoint(path) if path.is_dir() else None
    if ckpt is None:
        raise UserError(f"--resume {resume}: no complete checkpoint there", "pass a run folder with checkpoints/, or --resume auto")
    return path, ckpt
