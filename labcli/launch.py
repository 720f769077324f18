"""From a verb's command line to a recipe's `run(cfg, ctx)`.

Shared by every verb: recipe lookup, `--flag value` and `key=value` overrides, the run folder,
`--resume`, and `--nproc N`, which re-launches this same command under torch.distributed.run.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from labcli import registry
from labcli.errors import UserError


@dataclass
class VerbArgs:
    """What every verb accepts besides its recipe's own keys."""

    verb: str
    recipe: str | None
    config: Path | None = None
    output: Path | None = None
    resume: str | None = None
    nproc: int = 1
    device: str | None = None
    seed: int | None = None
    extra: list[str] = field(default_factory=list)


def flags_to_overrides(extra: list[str]) -> list[str]:
    """`--method qlora` -> `method=qlora`, `--paged` -> `paged=true`, `a.b=1` stays as it is."""
    out, i = [], 0
    while i < len(extra):
        item = extra[i]
        if item.startswith("--"):
            key = item[2:].replace("-", "_")
            if "=" in key:
                out.append(key)
            elif i + 1 < len(extra) and not extra[i + 1].startswith("--") and "=" not in extra[i + 1]:
                out.append(f"{key}={extra[i + 1]}")
                i += 1
            else:
                out.append(f"{key}=true")
        elif "=" in item:
            out.append(item)
        else:
            raise UserError(f"unexpected argument '{item}'", "pass options as --key value or key=value")
        i += 1
    return out


def run_verb(args: VerbArgs) -> None:
    from labcli.runs import Run, release_run_dir, resolve_resume, seed_everything, set_threads

    if args.recipe is not None and "=" in args.recipe:  # `lab VERB --config F key=value`: no recipe name
        args.extra.insert(0, args.recipe)
        args.recipe = None
    if args.recipe is None and args.config is None:
        raise UserError(f"no {args.verb} recipe given", f"`lab ls {args.verb}` lists them; run `lab {args.verb} NAME`")
    overrides = flags_to_overrides(args.extra)
    if args.device:
        overrides.append(f"device={args.device}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    cfg, recipe = registry.load(args.verb, args.recipe, args.config, overrides)
    if args.nproc < 1:
        raise UserError(f"--nproc {args.nproc} must be at least 1", "pass --nproc 2 for two processes")
    where = f"`lab {args.verb} {recipe.name}`"
    if args.resume is not None and not recipe.supports("resume"):
        raise UserError(f"{where} cannot resume: it keeps no checkpoints", "run it again without --resume")
    if args.nproc > 1 and not recipe.supports("nproc"):
        raise UserError(f"{where} runs in one process", "drop --nproc (it would run the whole experiment once per process)")

    in_torchrun = "LOCAL_RANK" in os.environ
    if in_torchrun and int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.output is None:
        raise UserError("the processes of a torchrun need one run folder to share",
                        "pass --output DIR (on a filesystem every node sees), or start it with `lab ... --nproc N`")
    run_dir, ckpt = resolve_resume(args.resume, args.verb, recipe.name, args.output)  # claims a new folder now
    ctx = Run(run_dir, args.verb, recipe.name, cfg, resume_from=ckpt)
    try:
        if args.nproc > 1 and not in_torchrun:
            relaunch(args.nproc, run_dir, ckpt)  # every rank gets this folder with --output
            return
        if in_torchrun:
            check_world_size()
        set_threads()
        seed_everything(cfg.seed)
        recipe.module().run(cfg, ctx)
        ctx.finish()
    except (UserError, KeyboardInterrupt):
        ctx.discard_if_empty()  # bad input found inside the recipe: leave nothing behind
        raise
    finally:
        if "torch.distributed" in sys.modules:  # torchrun's group, or DeepSpeed's group of one
            from labcli.engine.distributed import shutdown

            shutdown()
        release_run_dir(run_dir)  # a claimed folder nothing was written to (any other failure) goes too


def relaunch(nproc: int, run_dir: Path, ckpt: Path | None) -> None:
    """Re-run this exact command under torch.distributed.run with nproc processes."""
    import subprocess

    argv = strip_options(sys.argv[1:], {"--nproc", "--output", "--resume"})
    argv += ["--output", str(run_dir)] + (["--resume", str(ckpt)] if ckpt else [])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "labcli"] + argv
    env = {**os.environ, "LAB_EXPECTED_WORLD_SIZE": str(nproc)}
    code = subprocess.call(cmd, env=env)
    if code != 0:
        raise UserError(f"{nproc}-process run failed (exit {code}); the failing rank's error is printed above",
                        f"fix it and continue with --resume auto --output {run_dir}")


def strip_options(argv: list[str], names: set[str]) -> list[str]:
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item in names:
            skip = True
            continue
        if any(item.startswith(n + "=") for n in names):
            continue
        out.append(item)
    return out




def check_world_size() -> None:
    """`accelerate launch --cpu` and friends can silently run one process: refuse that."""
    expected = os.environ.get("LAB_EXPECTED_WORLD_SIZE")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if expected and int(expected) != world:
        raise UserError(f"asked for {expected} processes but WORLD_SIZE is {world}", "launch with `lab VERB RECIPE --nproc N`")
