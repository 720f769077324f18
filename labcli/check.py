"""`lab check VERB RECIPE [overrides]`: validate a run before starting it (torchtune's `tune validate`).

Resolves and validates the config, then looks at what the run will touch: data files (their header
and a sample of rows), models (preset, folder, or hub id in the local cache), run folders it reads,
ports it listens on, what it supports (`--resume`, `--nproc`), the optional parts it needs (the
Triton environment, Java, audio packages, EGL) and what it builds first. Prints one line per problem
with its fix and exits 2, or prints "ok" and what the run will do.

A recipe module can add its own checks with `check(cfg) -> list[str]` (each "WHAT (hint: FIX)"; a
check that raises UserError reports that one problem, so `check` can simply call the recipe's validation),
describe the run with `plan(cfg) -> str`, and name what it needs with `NEEDS = ["java", ...]`.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from pydantic import BaseModel

from labcli import registry
from labcli.errors import UserError
from labcli.launch import flags_to_overrides

MODEL_KEYS = {"model", "init", "teacher", "student_model", "base"}
FILE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json", ".txt", ".yaml", ".yml", ".wav", ".png", ".jpg")


def leaves(cfg: BaseModel, prefix: str = ""):
    """(dotted key, value) for every leaf of a config."""
    for name in type(cfg).model_fields:
        value = getattr(cfg, name)
        if isinstance(value, BaseModel):
            yield from leaves(value, f"{prefix}{name}.")
        else:
            yield prefix + name, value


def check_model(key: str, name: str) -> list[str]:
    """A preset, a model folder, or a hub id that is cached (or reachable when online)."""
    import os

    from labcli.models.presets import PRESETS

    if name in ("", "auto", "gold", "program") or name.startswith("http://") or name.startswith("https://"):
        return []
    if name.startswith("tiny-"):
        return [] if name in PRESETS else [f"{key}: unknown preset '{name}' (hint: presets: {', '.join(PRESETS)})"]
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists() and not (path / "model" / "config.json").exists():
            return [f"{key}: {path} is not a model folder (no config.json) (hint: pass a save_pretrained folder or RUN/model)"]
        return []
    if "/" in name and name.count("/") == 1 and not name.startswith((".", "/")):
        if os.environ.get("HF_HUB_OFFLINE") != "1":
            return []
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return []
        return [f"{key}: model '{name}' is not in the local cache and lab is offline "
                f"(hint: set LAB_ONLINE=1 to download it, or pass a local folder or a tiny-* preset)"]
    if name.endswith(FILE_SUFFIXES) or "/" in name:
        return [f"{key}: {name} not found (hint: check the path)"]
    return []


def check_file(key: str, value: str) -> tuple[list[str], str | None]:
    """A data file a run reads: it exists and is UTF-8 text; returns (problems, what it holds)."""
    path = Path(value).expanduser()
    if not path.exists():
        return [f"{key}: file not found: {value} (hint: check the path; relative paths start at {Path.cwd()})"], None
    if path.is_dir() or path.suffix in (".wav", ".png", ".jpg"):
        return [], None
    raw = path.read_bytes()[:200_000]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(raw) - 4:
            return [f"{key}: {value} is not UTF-8 text (byte {exc.start}) (hint: save it as UTF-8)"], None
        text = raw[:exc.start].decode("utf-8-sig")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return [f"{key}: {value} is empty (hint: pass a file with data)"], None
    if path.suffix == ".tsv":
        return [], f"{key}: {value}: columns {lines[0].rstrip().split(chr(9))}, first row {lines[1:2]}"
    if path.suffix == ".csv":
        return [], f"{key}: {value}: header {lines[0].rstrip()[:120]}"
    if path.suffix == ".jsonl":
        try:
            first = json.loads(lines[0])
        except json.JSONDecodeError as exc:
            return [f"{key}: {value}:1 is not JSON ({exc.msg}) (hint: one JSON object per line)"], None
        return [], f"{key}: {value}: keys {sorted(first) if isinstance(first, dict) else type(first).__name__}"
    return [], f"{key}: {value}: {len(lines)}+ lines"


def check_run_folder(key: str, value: str) -> list[str]:
    path = Path(value).expanduser()
    if not value:
        return []
    if not (path / "config.yaml").exists():
        return [f"{key}: no run folder at {value} (hint: pass a folder under runs/ made by a lab run)"]
    return []


def check_port(key: str, port: int, host: str = "127.0.0.1") -> list[str]:
    if not port:
        return []
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError:
            return [f"{key}: port {port} is in use (hint: pass another --port, or `lab serve stop`)"]
    return []


def check_needs(needs: list[str]) -> list[str]:
    """The optional system parts a recipe needs."""
    import shutil

    problems = []
    for need in needs:
        if need == "java" and not shutil.which("java"):
            problems.append("Java is not installed; TorchServe runs on it (hint: apt-get install openjdk-17-jre-headless)")
        elif need == "triton-env":
            from labcli.serving import triton

            problem = triton.env_problem() if hasattr(triton, "env_problem") else None
            if problem:
                problems.append(problem)
        elif need == "audio":
            from pathlib import Path as P

            if not P("/usr/share/asterisk/sounds/en").is_dir() or not shutil.which("espeak-ng"):
                problems.append("the audio packages are missing (hint: sh labcli/detect/setup_audio.sh)")
    return problems


def check(verb: str, recipe: str | None, config: Path | None, extra: list[str], *, resume: str | None = None,
          nproc: int = 1) -> tuple[list[str], list[str]]:
    """(problems, notes) for `lab VERB RECIPE ...` without running it."""
    try:
        cfg, found = registry.load(verb, recipe, config, flags_to_overrides(extra))
    except UserError as exc:
        return [str(exc)], []
    module = found.module()
    problems, notes = [], []
    if resume is not None and not found.supports("resume"):
        problems.append(f"`lab {verb} {found.name}` cannot resume: it keeps no checkpoints (hint: drop --resume)")
    if nproc > 1 and not found.supports("nproc"):
        problems.append(f"`lab {verb} {found.name}` runs in one process (hint: drop --nproc)")
    for key, value in leaves(cfg):
        last = key.rsplit(".", 1)[-1]
        if isinstance(value, str) and last in MODEL_KEYS:
            problems += check_model(key, value)
        elif isinstance(value, str) and last == "run":
            problems += check_run_folder(key, value)
        elif isinstance(value, str) and value.endswith(FILE_SUFFIXES):
            found_problems, note = check_file(key, value)
            problems += found_problems
            notes += [note] if note else []
        elif last == "port" and isinstance(value, int):
            problems += check_port(key, value)
    problems += check_needs(list(getattr(module, "NEEDS", [])))
    if hasattr(module, "check"):
        try:
            problems += list(module.check(cfg) or [])
        except UserError as exc:
            problems.append(str(exc))
    notes.append(module.plan(cfg) if hasattr(module, "plan") else default_plan(cfg))
    return problems, notes


def default_plan(cfg) -> str:
    train = getattr(cfg, "train", None)
    if train is not None and hasattr(train, "max_steps"):
        return (f"{train.max_steps} optimizer steps of {train.batch_size} examples "
                f"({train.micro_batch_size} per forward pass), lr {train.lr}, {train.precision}")
    return "the config is valid"
