"""`lab ls`, `lab cp` and per-recipe help: all read from the registry."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labcli import registry
from labcli.config import describe_fields
from labcli.errors import UserError

# A terminal gets tables fitted to its width; a pipe or file gets them whole (never cut at 80 columns).
console = Console() if sys.stdout.isatty() else Console(width=1000)


def list_recipes(verb: str | None, markdown: bool = False, tools: dict[str, dict[str, str]] | None = None) -> None:
    """Every recipe (and, marked as commands, the plain commands `tools` lists per verb: name -> help)."""
    if verb is not None and verb not in registry.VERBS:
        raise UserError(f"unknown verb '{verb}'", f"one of: {', '.join(registry.VERBS)}")
    tools = tools or {}
    if markdown:  # the README's table is this output
        print("| verb | recipe | what it does | example |\n|---|---|---|---|")
        for v in [verb] if verb else registry.VERBS:
            for r in registry.recipes_for(v):
                print(f"| {v} | {r.name} | {r.description} | `{r.command}` |")
            for name, help in sorted(tools.get(v, {}).items()):
                print(f"| {v} | {name} (command) | {help} | `lab {v} {name} --help` |")
        return
    table = Table(title="lab recipes", show_lines=False)
    table.add_column("verb", style="bold cyan")
    table.add_column("recipe", style="bold")
    table.add_column("description")
    table.add_column("example", style="dim")
    for v in [verb] if verb else registry.VERBS:
        recipes = registry.recipes_for(v)
        if not recipes:
            table.add_row(v, "-", f"(no recipes yet) {registry.VERBS[v]}", "")
        for r in recipes:
            table.add_row(v, r.name, escape(r.description), escape(r.command))
        for name, help in sorted(tools.get(v, {}).items()):
            table.add_row(v, f"{name} (command)", escape(help), f"lab {v} {name} --help")
    console.print(table)


def copy_recipe(spec: str, dest: Path | None) -> Path:
    if "/" not in spec:
        raise UserError(f"'{spec}' is not VERB/RECIPE", "e.g. `lab cp finetune/newari my.yaml`")
    verb, name = spec.split("/", 1)
    recipe = registry.find(verb, name)
    target = dest or Path(f"{name}.yaml")
    if target.is_dir():
        target = target / f"{name}.yaml"
    if target.exists():
        raise UserError(f"{target} already exists", "pass another destination or delete it")
    lines = recipe.path.read_text(encoding="utf-8").splitlines(keepends=True)
    head = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    lines.insert(head, f"recipe: {name}  # the recipe this file configures; its keys below override the recipe's\n")
    target.write_text("".join(lines), encoding="utf-8")
    console.print(f"copied {verb}/{name} to {target}; run it with: lab {verb} --config {target}")
    return target


def print_recipe_help(verb: str, name: str | None, tools: list[str] | None = None) -> None:
    if name is None:
        names = [r.name for r in registry.recipes_for(verb)]
        console.print(f"{verb} recipes: {', '.join(names) if names else '(none yet)'}")
        if tools:
            console.print(f"{verb} commands: {', '.join(tools)} (`lab {verb} NAME --help`)")
        return
    recipe = registry.find(verb, name)
    data = recipe.raw
    module = recipe.module()
    console.print(f"[bold]{escape(recipe.command)}[/bold]\n{escape(recipe.description)}\n")
    table = Table(title=f"keys of {verb}/{name} (override with KEY=VALUE or --KEY VALUE)")
    for col in ("key", "type", "value in recipe", "meaning"):
        table.add_column(col)
    for key, type_name, default, doc in describe_fields(module.Config):
        value = _lookup(data, key)
        shown = default if value is None else repr(value)
        table.add_row(*(escape(str(c)) for c in (key, type_name, shown, doc)))
    console.print(table)


def _lookup(data: dict, dotted: str):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
