"""Run folders, resume and atomic writes: the bottom layer every verb stands on.

A run is `runs/<verb>-<recipe>-<time>/` holding `config.yaml` (the resolved config plus where it
came from: verb, recipe, lab's commit, library versions), `metrics.jsonl`, `summary.json`,
`report.md`, plots and `checkpoints/`. The folder's name is claimed when the run starts (an empty
folder, made with os.mkdir, so two runs started in the same second never share one); config.yaml
appears on the first write, and a run that fails before writing a result leaves nothing on disk.
Only rank 0 writes.

Every file is written atomically: to a temporary file beside it, fsync'd, then renamed over the
target, with the permissions a plain `open()` would give (the umask applies). Folders are
replaced the same way (`replace_dir`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from labcli.errors import UserError
from labcli.paths import runs_root

# ----------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes) -> None:
    write_with(path, lambda tmp: Path(tmp).write_bytes(data))


def write_with(path: Path, writer: Callable[[str], Any]) -> Path:
    """For anything that writes a file itself (torch.save, savefig, joblib, PIL): writer(temp path), then rename.

    The temp file keeps the target's suffix, for writers that pick the format from it (.png, .gif, .mp4).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are for everyone the umask allows
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n")


def replace_dir(path: Path, writer: Callable[[Path], Any]) -> Path:
    """Build a folder in a temporary sibling with writer(temp folder), then swap it in for `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        writer(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        swap_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def swap_dir(tmp: Path, path: Path) -> None:
    """Put the finished folder `tmp` where `path` is, replacing what was there; fsync'd."""
    _fsync_dir(tmp)
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line. A torn last line (killed mid-write) is skipped by read_jsonl."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False, default=_jsonable) + "\n")
        fh.flush()


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_jsonl(path: Path, step: int) -> None:
    """Drop records logged after `step` (a resumed run logs them again), atomically."""
    if Path(path).exists():
        rows = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
        write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# ----------------------------------------------------------------------------- seeding


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device) from one number."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads() -> None:
    """Explicit intra-op threads per process: LAB_THREADS, default 1.

    Oversubscribed CPU threads (processes x threads > cores, or other jobs running) made training
    about 7x slower on a 2-core machine; one thread per process never oversubscribes. A single
    run on an otherwise idle machine may gain from LAB_THREADS=<cores>.
    """
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("LAB_THREADS", "1"))))


def quiet_libraries() -> None:
    """Hide library chatter that says nothing about the user's run: deprecations inside
    transformers/peft, bitsandbytes' optional hub-kernel probe (it cannot work offline), and
    torchao's CUDA-only extensions failing to load on a CPU machine with the pytree deprecations its
    import triggers (transformers imports torchao whenever a model is loaded). Every lab process
    calls it: the CLI (unless --debug) and the worker processes a recipe starts itself."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("bitsandbytes", "torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # accelerate imports DeepSpeed (when installed) with every model load, and DeepSpeed's import says on
    # stdout which accelerator it guessed; its logger resets its own level then, so filter the line.
    logging.getLogger("DeepSpeed").addFilter(lambda record: "Setting accelerator to" not in record.getMessage())


# ----------------------------------------------------------------------------- provenance

VERSIONED = ("torch", "transformers", "peft", "bitsandbytes", "trl")


def provenance() -> dict:
    """lab's git commit (and whether the tree had uncommitted changes) and the key library versions,
    read once per process: the first Run reads it when it starts, so a run that writes config.yaml
    late still names the code it started with."""
    return json.loads(json.dumps(_provenance()))


@functools.lru_cache(maxsize=1)
def _provenance() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    repo = Path(__file__).resolve().parents[1]
    commit, dirty = "unknown", None
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=True).stdout
        dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    versions = {}
    for name in ("labcli", *VERSIONED):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {"commit": commit, "dirty": dirty, "versions": versions}


# ----------------------------------------------------------------------------- prerequisites


def prerequisite(verb: str, recipe: str, overrides: list[str], why: str) -> Path:
    """A run another recipe needs first (GRPO's CoT student, a model to serve), built once with
    `lab VERB RECIPE OVERRIDES` and cached under LAB_HOME/prerequisites/, keyed by that command and
    the recipe's YAML. Says in one line which it uses. A build that was killed is resumed or redone;
    a folder without summary.json is never used."""
    import hashlib
    import sys

    from labcli.paths import lab_home

    recipe_yaml = Path(__file__).parent / "recipes" / verb / f"{recipe}.yaml"
    text = recipe_yaml.read_text(encoding="utf-8") if recipe_yaml.exists() else ""
    key = hashlib.sha256(json.dumps([verb, recipe, overrides, text]).encode()).hexdigest()[:12]
    folder = lab_home() / "prerequisites" / f"{verb}-{recipe}-{key}"
    command = " ".join(["lab", verb, recipe, *overrides])
    with building_lock(folder, f"{why}: another lab process is building `{command}`; waiting for it"):
        if (folder / "summary.json").exists():
            print(f"{why}: the cached `{command}` run ({folder})", flush=True)
            return folder
        print(f"{why}: building it once with `{command}` (cached in {folder})", flush=True)
        cmd = [sys.executable, "-m", "labcli", verb, recipe, *overrides, "--output", str(folder)]
        if latest_checkpoint(folder) is not None:
            cmd += ["--resume", "auto"]
        elif folder.exists():
            shutil.rmtree(folder)
        if subprocess.call(cmd) != 0 or not (folder / "summary.json").exists():
            raise UserError(f"building the prerequisite `{command}` failed (its error is above)",
                            f"fix it and rerun; or run `{command}` yourself and pass its run folder")
        return folder


@contextlib.contextmanager
def building_lock(folder: Path, waiting: str):
    """Hold an exclusive lock on FOLDER.lock while checking and building FOLDER, so two lab processes
    (two `lab serve` commands, two test workers) never build, or delete, the same cached run at
    once: the second waits (saying so) and then finds the first's result. The OS drops the lock
    when its holder exits, killed or not. Where fcntl does not exist (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(waiting, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- the run


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class Run:
    """A run's folder and how it was started: what every recipe's `run(cfg, ctx)` receives as `ctx`."""

    def __init__(self, dir: Path, verb: str, recipe: str, cfg: Any, resume_from: Path | None = None):
        self.root, self.verb, self.recipe, self.cfg = Path(dir), verb, recipe, cfg
        self.resume_from = resume_from  # a checkpoint folder to continue from, or None
        self._created = (self.root / "config.yaml").exists()
        provenance()  # the commit and versions at the start of the run (cached), not when config.yaml is written

    def sub(self, name: str, *, recipe: str | None = None, cfg: Any = None, resume_from: Path | None = None) -> "Run":
        """A run inside this one (one cell of a bench, one method of `--method all`): RUN/NAME/."""
        return Run(self.root / name, self.verb, recipe or f"{self.recipe}:{name}", cfg if cfg is not None else self.cfg,
                   resume_from)

    def cell(self, name: str, compute: Callable[[], Any], settings: Any = None) -> Any:
        """One cell of a bench (one technique, one seed, ...), kept once it finishes.

        The result of `compute()` (JSON-able) is saved in RUN/cells/NAME.json with the settings it
        ran under (default: the whole config), and checkpoints/step-<cells kept>/ marks progress, so
        a killed bench continued with `--resume auto` reuses the finished cells and runs the rest."""
        kept = self.kept(name, settings)
        if kept is not None:
            return kept
        result = json.loads(json.dumps(compute(), default=_jsonable))  # the same types as a kept cell's
        if is_rank0():
            write_json(self.dir / "cells" / f"{name}.json", {"settings": self._cell_settings(settings), "result": result})
            count = len(list((self.dir / "cells").glob("*.json")))
            checkpoints = self.dir / "checkpoints"
            replace_dir(checkpoints / f"step-{count:08d}", lambda tmp: write_text(tmp / "COMPLETE", f"{count} cells kept\n"))
            for old in checkpoints.glob("step-*"):
                if old.name != f"step-{count:08d}":
                    shutil.rmtree(old, ignore_errors=True)
        return result

    def kept(self, name: str, settings: Any = None) -> Any:
        """On a resumed run, cell NAME's saved result if it finished under these settings; else None."""
        path = self.root / "cells" / f"{name}.json"
        if self.resume_from is None or not path.exists():
            return None
        saved = json.loads(path.read_text(encoding="utf-8"))
        return saved["result"] if saved.get("settings") == self._cell_settings(settings) else None

    def _cell_settings(self, settings: Any) -> Any:
        return json.loads(json.dumps(self.cfg.model_dump(mode="json") if settings is None else settings, default=_jsonable))

    @property
    def dir(self) -> Path:
        """The run folder, made (with config.yaml) the first time anything asks for it."""
        if not self._created and is_rank0():
            self.root.mkdir(parents=True, exist_ok=True)
            write_text(self.root / "config.yaml", self.config_yaml())
        self._created = True
        return self.root

    def config_yaml(self) -> str:
        header = {"verb": self.verb, "recipe": self.recipe, "lab": provenance()}
        body = yaml.safe_dump(header, sort_keys=False, allow_unicode=True)
        body += yaml.safe_dump(self.cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        return f"# lab {self.verb} {self.recipe} --config config.yaml   (reruns this run; `lab reproduce run --run DIR` compares)\n{body}"

    def discard_if_empty(self) -> None:
        """Remove a folder this run made that holds nothing but its config (the run failed before any result)."""
        if self.resume_from is None and self.root.is_dir() and is_rank0():
            if [p.name for p in self.root.iterdir()] == ["config.yaml"]:
                shutil.rmtree(self.root, ignore_errors=True)
        release_run_dir(self.root)

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
            append_jsonl(self.metrics_path, {"time": round(time.time(), 3), **record})
        _fault_injection(record.get("step"))

    def metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)

    def write_summary(self, summary: dict) -> None:
        if is_rank0():
            write_json(self.dir / "summary.json", summary)

    def write_report(self, markdown: str) -> None:
        if is_rank0():
            write_text(self.dir / "report.md", markdown)

    def path(self, name: str) -> Path:
        return self.dir / name

    def finish(self) -> None:
        """The last lines of every run (the launcher prints them after the recipe's headline numbers)."""
        if not is_rank0() or not self._created:
            return
        print(f"run folder: {self.dir}")
        if (self.dir / "report.md").exists():
            print(f"report: {self.dir / 'report.md'}")


def _fault_injection(step: Any) -> None:
    """Tests: LAB_FAULT_KILL_AT_STEP=N sends this process a real SIGKILL right after step N is logged."""
    kill_at = os.environ.get("LAB_FAULT_KILL_AT_STEP")
    if kill_at and step is not None and int(step) == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)


_claimed: dict[Path, list[Path]] = {}  # run folder claimed by this process -> the parents the claim made


def new_run_dir(verb: str, recipe: str) -> Path:
    """Claim a fresh `runs/<verb>-<recipe>-<time>` (then `-2`, `-3`, ...) by making it, empty.

    os.mkdir fails when the folder exists, so two runs started in the same second (threads or
    processes) never get the same one. Only rank 0 makes folders; `--nproc N` claims in the
    launching process and hands the folder to every rank with --output. `release_run_dir` gives
    back a claim nothing was written to.
    """
    base = runs_root() / f"{verb}-{recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not is_rank0():  # only rank 0 makes folders (`lab` itself gives every rank --output)
        return base
    made = [p for p in base.parents if not p.exists()]  # deepest first: what the claim creates
    n = 1
    while True:
        path = base if n == 1 else Path(f"{base}-{n}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
        except FileExistsError:
            n += 1
            continue
        except FileNotFoundError:  # another run's release removed runs/ between the two mkdirs
            continue
        _claimed[path] = made
        return path


def release_run_dir(path: Path) -> None:
    """If this process claimed PATH and it is still empty, remove it, and the parents the claim made
    (runs/) that are empty now: a run that wrote nothing leaves nothing."""
    path = Path(path)
    if path not in _claimed:
        return
    for folder in [path, *_claimed.pop(path)]:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # not empty: a result, or another run's folder
            break


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
