"""The recipe registry: the single source for `lab ls`, help text, and the tests.

A recipe is `labcli/recipes/<verb>/<name>.yaml`. Its first comment line is the command that
runs it; its `description` key is the one-liner `lab ls` shows; its `entry` key names the
module with `Config` and `run(cfg, ctx)`. Modules are imported lazily so `lab --help` stays fast.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from labcli.config import RecipeConfig, apply_overrides, read_yaml, validate
from labcli.errors import UserError

RECIPES_DIR = Path(__file__).parent / "recipes"

VERBS: dict[str, str] = {
    "finetune": "Finetune a model (full, LoRA, QLoRA) and score it.",
    "distill": "Distill reasoning and knowledge into small students (CoT SFT, GRPO, DAPO, KD).",
    "bench": "Measure speed and memory of techniques side by side (JSON, table, plot).",
    "profile": "Profile a training or inference step (torch.profiler trace, top ops).",
    "serve": "Serve a run's model behind a real inference server.",
    "simulate": "Control simulated robots and train RL agents.",
    "reproduce": "Rerun a finished run from its saved config and check that its numbers reproduce.",
    "detect": "Attack, defend and detect: adversarial ML and ML for security.",
}


@dataclass(frozen=True)
class Recipe:
    verb: str
    name: str
    path: Path

    @property
    def raw(self) -> dict:
        return read_yaml(self.path)

    @property
    def description(self) -> str:
        return str(self.raw.get("description", ""))

    @property
    def command(self) -> str:
        """The command in the YAML's opening comment."""
        first = self.path.read_text(encoding="utf-8").splitlines()[0]
        return first.lstrip("# ").strip()


def all_recipes() -> list[Recipe]:
    return [r for verb in VERBS for r in recipes_for(verb)]


def recipes_for(verb: str) -> list[Recipe]:
    folder = RECIPES_DIR / verb
    return [Recipe(verb, p.stem, p) for p in sorted(folder.glob("*.yaml"))]


def find(verb: str, name: str) -> Recipe:
    if verb not in VERBS:
        raise UserError(f"unknown verb '{verb}'", f"one of: {', '.join(VERBS)}")
    options = recipes_for(verb)
    for recipe in options:
        if recipe.name == name:
            return recipe
    names = [r.name for r in options]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    listing = ", ".join(names) if names else "none yet"
    raise UserError(f"unknown {verb} recipe '{name}'", f"{hint}{verb} recipes: {listing}; see `lab ls`")


def entry_module(data: dict, source: str) -> ModuleType:
    entry = data.get("entry")
    if not isinstance(entry, str):
        raise UserError(f"{source} has no 'entry' key", "copy a recipe with `lab cp` and edit it")
    try:
        module = importlib.import_module(entry)
    except ModuleNotFoundError as exc:
        if exc.name and entry.startswith(exc.name):
            raise UserError(f"entry module '{entry}' in {source} does not exist", "see `lab ls`") from None
        raise
    if not hasattr(module, "Config") or not hasattr(module, "run"):
        raise UserError(f"entry module '{entry}' has no Config/run", "name a recipe module") from None
    return module


def load(recipe: Recipe | None, config_file: Path | None, overrides: list[str]) -> tuple[RecipeConfig, ModuleType]:
    """Resolve a recipe (or a user YAML) plus overrides into a validated Config and its module."""
    path = config_file if config_file is not None else recipe.path
    data = apply_overrides(read_yaml(path), overrides)
    module = entry_module(data, str(path))
    return validate(module.Config, data, str(path)), module
