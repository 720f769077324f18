"""The `lab` command tree (Typer). Logic lives in labcli.commands and below."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from labcli.paths import setup_cache_env

setup_cache_env()

from labcli.commands import bench, detect, distill, finetune, profile, reproduce, serve, simulate  # noqa: E402
from labcli.commands.common import VERB_SETTINGS  # noqa: E402
from labcli.errors import UserError  # noqa: E402

app = typer.Typer(
    help="lab: run real ML experiments end to end. `lab ls` lists every recipe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (finetune, distill, bench, profile, serve, simulate, reproduce, detect):
    verb = module.__name__.rsplit(".", 1)[-1]
    app.command(verb, context_settings=VERB_SETTINGS)(module.command)


@app.command("ls")
def ls(
    verb: Optional[str] = typer.Argument(None, help="Only this verb's recipes."),
    markdown: bool = typer.Option(False, "--markdown", help="A markdown table (the README's)."),
) -> None:
    """List every recipe by verb with a one-line description and an example command."""
    from labcli.commands.listing import list_recipes

    list_recipes(verb, markdown)


@app.command("cp")
def cp(
    spec: str = typer.Argument(..., help="VERB/RECIPE, e.g. finetune/newari"),
    dest: Optional[Path] = typer.Argument(None, help="Destination file or folder (default ./RECIPE.yaml)"),
) -> None:
    """Copy a recipe YAML to edit; run it with `lab VERB --config FILE`."""
    from labcli.commands.listing import copy_recipe

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

    typer.echo(f"wrote {export(run, out)}; push it with `huggingface-cli upload USER/SPACE {out} --repo-type space`")


@app.command("env")
def env(short: bool = typer.Option(False, "--short", help="Versions only, skip the probes.")) -> None:
    """Versions of every dependency, threads, devices, and which optional paths work here."""
    from labcli.envinfo import print_env

    print_env(short)


def quiet_libraries() -> None:
    """Hide library chatter that says nothing about the user's run (deprecations inside
    transformers/peft, bitsandbytes' optional hub-kernel probe, which cannot work offline)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def main() -> None:
    """Entry point: user errors become one line and exit 2; --debug shows the traceback."""
    debug = "--debug" in sys.argv or os.environ.get("LAB_DEBUG") == "1"
    if not debug:
        quiet_libraries()
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        app(standalone_mode=False)
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
    except Exception as exc:  # click usage errors and friends
        import click

        if isinstance(exc, click.ClickException):
            if debug:
                raise
            typer.echo(f"error: {exc.format_message()} (hint: see `lab --help`)", err=True)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
