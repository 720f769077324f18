"""The `lab` command tree (Typer), built from the recipe registry: one command per verb taking a
recipe name, plus plain commands that are not experiments (`ls`, `cp`, `env`, `export space`,
`serve stop`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from labcli.paths import setup_cache_env

setup_cache_env()

from labcli.errors import UserError  # noqa: E402
from labcli.launch import VerbArgs, run_verb  # noqa: E402
from labcli import registry, runs  # noqa: E402
from labcli.registry import VERBS  # noqa: E402

app = typer.Typer(
    help="lab: run real ML experiments end to end. `lab ls` lists every recipe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

VERB_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
COMMAND_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}  # overrides pass through; --help is theirs

COMMON_HELP = """
Options shared by every verb:

  --config FILE          lay a YAML over the recipe (a partial one works; a file from `lab cp` names its recipe)

  KEY=VALUE              override any recipe key, dotted for sections (train.lr=3e-4)

  --KEY VALUE, --FLAG    the same for top-level keys (--method qlora, --paged)

  --output DIR           the run folder (default runs/VERB-RECIPE-TIME)

  --resume auto|PATH     continue the newest run of this recipe, or a given run/checkpoint (resumable recipes)

  --nproc N              re-launch under torch.distributed.run with N processes (multi-process recipes)

  --device auto|cpu|cuda, --seed N, --debug (show tracebacks)

`lab VERB RECIPE --help` lists that recipe's keys with types, defaults and meaning.
"""

# Commands that are not experiments: plain Typer apps reached as `lab VERB NAME`, writing no run folder.
TOOLS: dict[str, dict[str, typer.Typer]] = {verb: {} for verb in VERBS}
TOOL_HELP: dict[str, dict[str, str]] = {verb: {} for verb in VERBS}


def tool(verb: str, name: str, help: str):
    """Register `lab VERB NAME` as a plain command (its own options, no recipe, no run folder)."""
    sub = typer.Typer(help=help, add_completion=False, pretty_exceptions_enable=False)
    TOOLS[verb][name], TOOL_HELP[verb][name] = sub, help
    return sub.command(name, help=help)


def verb_command(verb: str):
    """The Typer callback of one verb: `lab VERB RECIPE [options] [key=value ...]`."""

    def command(
        ctx: typer.Context,
        recipe: Optional[str] = typer.Argument(None, help="Recipe name; `lab ls VERB` lists them."),
        config: Optional[Path] = typer.Option(None, "--config", help="A YAML laid over the recipe."),
        output: Optional[Path] = typer.Option(None, "--output", help="Run folder."),
        resume: Optional[str] = typer.Option(None, "--resume", help="auto, or a run/checkpoint folder."),
        nproc: int = typer.Option(1, "--nproc", help="Processes (torch.distributed.run)."),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
        show_help: bool = typer.Option(False, "--help", "-h", help="Show help (with RECIPE: its keys)."),
    ) -> None:
        if recipe in TOOLS[verb]:
            argv = list(ctx.args) + (["--help"] if show_help else [])
            for flag, value in (("--config", config), ("--output", output), ("--resume", resume), ("--device", device)):
                if value is not None:
                    argv = [flag, str(value)] + argv
            TOOLS[verb][recipe](argv, prog_name=f"lab {verb} {recipe}", standalone_mode=False)
            return
        if show_help:
            from labcli.listing import print_recipe_help

            if recipe:
                print_recipe_help(verb, recipe)
            else:
                typer.echo(ctx.get_help())
                print_recipe_help(verb, None, tools=sorted(TOOLS[verb]))
            raise typer.Exit(0)
        run_verb(VerbArgs(verb, recipe, config, output, resume, nproc, device, seed, list(ctx.args)))

    command.__doc__ = VERBS[verb] + "\n\n" + COMMON_HELP
    return command


for _verb in VERBS:
    app.command(_verb, context_settings=VERB_SETTINGS)(verb_command(_verb))


@app.command("ls")
def ls(
    verb: Optional[str] = typer.Argument(None, help="Only this verb's recipes."),
    markdown: bool = typer.Option(False, "--markdown", help="A markdown table (the README's)."),
) -> None:
    """List every recipe by verb with a one-line description and an example command."""
    from labcli.listing import list_recipes

    list_recipes(verb, markdown, TOOL_HELP)


@app.command("cp")
def cp(
    spec: str = typer.Argument(..., help="VERB/RECIPE, e.g. finetune/newari"),
    dest: Optional[Path] = typer.Argument(None, help="Destination file or folder (default ./RECIPE.yaml)"),
) -> None:
    """Copy a recipe YAML to edit; run it with `lab VERB --config FILE`."""
    from labcli.listing import copy_recipe

    copy_recipe(spec, dest)


export_app = typer.Typer(help="Package a run for somewhere else (a Hugging Face Space).", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("space")
def export_space(
    run: Path = typer.Option(..., "--run", help="A finished `lab finetune newari` run folder."),
    out: Path = typer.Argument(..., help="New folder to write (app.py, requirements.txt, README.md, model/)."),
) -> None:
    """A Hugging Face Spaces-ready folder: Streamlit app.py, requirements, README front matter, merged model."""
    from labcli.serving.space import export_space as export

    typer.echo(f"wrote {export(run, out)}; push it with `hf upload USER/SPACE {out} --repo-type space`")


@tool("serve", "stop", "Stop servers started with --detach (all, or one by --name) and check no process is left.")
def serve_stop(name: str = typer.Option("", "--name", help="Server to stop, as printed at start (e.g. triton-8000); empty: all.")) -> None:
    from labcli.serving.process import stop_servers

    stop_servers(name)


@app.command("check", context_settings=COMMAND_SETTINGS)
def check(
    ctx: typer.Context,
    verb: str = typer.Argument(..., help="The verb, e.g. finetune."),
    recipe: Optional[str] = typer.Argument(None, help="The recipe; then the same overrides as the run."),
    config: Optional[Path] = typer.Option(None, "--config", help="A YAML laid over the recipe."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Check that the recipe can resume."),
    nproc: int = typer.Option(1, "--nproc", help="Check that the recipe runs in N processes."),
) -> None:
    """Validate `lab VERB RECIPE [key=value ...]` without running it: config, data files, models, ports,
    run folders, optional parts. One line per problem with its fix (exit 2), or "ok" and the plan."""
    from labcli.check import check as run_check

    if verb not in VERBS:
        raise UserError(f"unknown verb '{verb}'", f"one of: {', '.join(VERBS)}")
    extra = list(ctx.args)
    if recipe is not None and "=" in recipe:
        extra.insert(0, recipe)
        recipe = None
    if "--output" in extra:  # accepted like the run's, nothing to check
        i = extra.index("--output")
        del extra[i:i + 2]
    problems, notes = run_check(verb, recipe, config, extra, resume=resume, nproc=nproc)
    for line in problems:
        typer.echo(f"problem: {line}", err=True)
    if problems:
        raise typer.Exit(2)
    for line in notes:
        typer.echo(line)
    typer.echo(f"ok: lab {verb} {recipe or ''} is ready to run".replace("  ", " "))


@app.command("launch", context_settings=COMMAND_SETTINGS)
def launch(
    ctx: typer.Context,
    kind: str = typer.Argument(..., help="slurm, k8s or ray"),
    verb: str = typer.Argument(..., help="The verb, e.g. finetune."),
    recipe: str = typer.Argument(..., help="The recipe; then its overrides (key=value, --key value)."),
    nodes: int = typer.Option(1, "--nodes", help="Machines."),
    gpus_per_node: int = typer.Option(1, "--gpus-per-node", help="Processes per machine."),
    run_dir: str = typer.Option("", "--run-dir", help="The run folder, on a filesystem every node shares."),
    out: Optional[Path] = typer.Option(None, "--out", help="The job file to write."),
    image: str = typer.Option("python:3.11", "--image", help="k8s: a container image with lab installed."),
    partition: str = typer.Option("", "--partition", help="slurm: the partition."),
    cpu: bool = typer.Option(False, "--cpu", help="Ask for no GPUs (CPU processes)."),
    pytorchjob: bool = typer.Option(False, "--pytorchjob", help="k8s: a Kubeflow Training Operator v1 PyTorchJob "
                                                                "instead of a Trainer v2 TrainJob."),
) -> None:
    """Write a cluster job file (sbatch script, Kubeflow TrainJob or --pytorchjob PyTorchJob, Ray Train
    entry point) that runs `lab VERB RECIPE ...` on NODES x GPUS processes under torchrun with c10d rendezvous."""
    from labcli.engine.launchers import Job, write_job
    from labcli.launch import flags_to_overrides

    overrides = flags_to_overrides(list(ctx.args))
    _, found = registry.load(verb, recipe, None, overrides)
    if nodes * gpus_per_node > 1 and not found.supports("nproc"):
        raise UserError(f"`lab {verb} {recipe}` runs in one process", "launch it with --nodes 1 --gpus-per-node 1")
    if pytorchjob and kind != "k8s":
        raise UserError(f"--pytorchjob is a Kubernetes manifest, not a {kind} job", "use `lab launch k8s ... --pytorchjob`")
    job = Job(verb, found.name, overrides, nodes, gpus_per_node, run_dir, image=image, partition=partition, use_gpu=not cpu,
              pytorchjob=pytorchjob)
    path = write_job(kind, job, out)
    typer.echo(f"wrote {path}: lab {verb} {found.name} on {nodes}x{gpus_per_node} processes ({kind})")


@app.command("env")
def env(short: bool = typer.Option(False, "--short", help="Versions only, skip the probes.")) -> None:
    """Versions of every dependency, threads, devices, and which optional paths work here."""
    from labcli.envinfo import print_env

    print_env(short)


def main() -> None:
    """Entry point: user errors become one line and exit 2; --debug shows the traceback."""
    debug = "--debug" in sys.argv or os.environ.get("LAB_DEBUG") == "1"
    if not debug:
        runs.quiet_libraries()
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        code = app(standalone_mode=False)  # typer.Exit(n) inside a command comes back as n here
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted (resume with --resume auto)", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors and friends (typer vendors its own click: match by name)
        if any(cls.__name__ == "ClickException" for cls in type(exc).__mro__):
            if debug:
                raise
            where = getattr(getattr(exc, "ctx", None), "command_path", None) or "lab"
            typer.echo(f"error: {exc.format_message()} (hint: see `{where} --help`)", err=True)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
