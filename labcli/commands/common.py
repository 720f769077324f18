"""The command shape every verb shares: `lab VERB RECIPE [options] [key=value ...]`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from labcli.launch import VerbArgs, run_verb

VERB_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}

COMMON_HELP = """
Options shared by every verb:

  --config FILE          run a YAML you copied with `lab cp` (RECIPE may be left out)

  KEY=VALUE              override any recipe key, dotted for sections (train.lr=3e-4)

  --KEY VALUE, --FLAG    the same for top-level keys (--method qlora, --paged)

  --output DIR           the run folder (default runs/VERB-RECIPE-TIME)

  --resume auto|PATH     continue the newest run of this recipe, or a given run/checkpoint

  --nproc N              re-launch under torch.distributed.run with N processes

  --device auto|cpu|cuda, --seed N, --debug (show tracebacks)

`lab VERB RECIPE --help` lists that recipe's keys with types, defaults and meaning.
"""


def verb_command(verb: str, summary: str):
    """Build the Typer callback for one verb."""

    def command(
        ctx: typer.Context,
        recipe: Optional[str] = typer.Argument(None, help="Recipe name; `lab ls VERB` lists them."),
        config: Optional[Path] = typer.Option(None, "--config", help="A recipe YAML to run instead."),
        output: Optional[Path] = typer.Option(None, "--output", help="Run folder."),
        resume: Optional[str] = typer.Option(None, "--resume", help="auto, or a run/checkpoint folder."),
        nproc: int = typer.Option(1, "--nproc", help="Processes (torch.distributed.run)."),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
        show_help: bool = typer.Option(False, "--help", "-h", help="Show help (with RECIPE: its keys)."),
    ) -> None:
        if show_help:
            from labcli.commands.listing import print_recipe_help

            if recipe:
                print_recipe_help(verb, recipe)
            else:
                typer.echo(ctx.get_help())
                print_recipe_help(verb, None)
            raise typer.Exit(0)
        run_verb(VerbArgs(verb, recipe, config, output, resume, nproc, device, seed, list(ctx.args)))

    command.__doc__ = summary + "\n\n" + COMMON_HELP
    return command
