"""The recipe registry: the single source for the command tree, `lab ls`, help text and the tests.

A recipe is `labcli/recipes/<verb>/<name>.yaml` beside the module `<name>.py` ('-' becomes '_')
that holds its `Config`, `run(cfg, ctx)` and report. The YAML's first comment line is the command
that runs it, `description` the one-liner `lab ls` shows. A YAML names another module of its
folder with `module: NAME` only when several recipes share one (grpo/dapo, the hub-model variants).

A recipe module declares what it supports: `RESUMABLE = True` (`--resume`) and
`MULTI_PROCESS = True` (`--nproc N`); both default to False. Modules are imported lazily so
`lab --help` stays fast.
"""

from __future__ import annotations

import copy
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
    "reproduce": "Check a paper's claims at small scale, or rerun a finished run and compare its numbers.",
    "detect": "Attack, defend and detect: adversarial ML and ML for security.",
    "eval": "Score any run's model: lm-evaluation-harness tasks and a position-swapped pairwise judge.",
}

# Keys a recipe file or a run's config.yaml may carry besides the Config's own: where it came from.
HEADER_KEYS = ("verb", "recipe", "module", "lab", "entry")


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

    @property
    def module_name(self) -> str:
        stem = str(self.raw.get("module") or self.name).replace("-", "_")
        return f"labcli.recipes.{self.verb}.{stem}"

    def module(self) -> ModuleType:
        module = importlib.import_module(self.module_name)
        if not hasattr(module, "Config") or not hasattr(module, "run"):
            raise UserError(f"recipe module {self.module_name} has no Config/run", "a recipe module defines both")
        return module

    def supports(self, what: str) -> bool:
        """'resume' or 'nproc': what the recipe's module declares (RESUMABLE, MULTI_PROCESS)."""
        flag = {"resume": "RESUMABLE", "nproc": "MULTI_PROCESS"}[what]
        return bool(getattr(self.module(), flag, False))


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


def recipe_of_file(verb: str, data: dict, source: Path) -> Recipe:
    """The recipe a user YAML (from `lab cp`, or a run's config.yaml) belongs to."""
    if data.get("verb") not in (None, verb):
        raise UserError(f"{source} is a `lab {data['verb']}` config, not `lab {verb}`", f"run `lab {data['verb']} --config {source}`")
    name = data.get("recipe")
    if name is None and isinstance(data.get("entry"), str):  # a config.yaml saved before recipes sat beside their YAML
        name = _legacy_recipe(verb, source)
    if not isinstance(name, str):
        raise UserError(f"{source} does not say which {verb} recipe it configures",
                        f"add a line `recipe: NAME`, or run `lab {verb} NAME --config {source}`")
    return find(verb, name)


def _legacy_recipe(verb: str, source: Path) -> str | None:
    """Old runs' folders are named <verb>-<recipe>-<time>: the longest recipe name that fits."""
    folder = source.resolve().parent.name
    names = sorted((r.name for r in recipes_for(verb)), key=len, reverse=True)
    return next((n for n in names if folder.startswith(f"{verb}-{n}-")), None)


def load(verb: str, name: str | None, config_file: Path | None, overrides: list[str]) -> tuple[RecipeConfig, Recipe]:
    """Resolve a recipe, a user YAML laid over it (a partial one works) and key=value overrides
    into a validated Config. Errors name where the bad value came from."""
    user = read_yaml(config_file) if config_file is not None else {}
    recipe = find(verb, name) if name else recipe_of_file(verb, user, config_file)
    data = _without_header(recipe.raw)
    layers = [(str(recipe.path), copy.deepcopy(data))]
    if config_file is not None:
        data = _merge(data, _without_header(user))
        layers.append((str(config_file), user))
    data = apply_overrides(data, overrides)
    return validate(recipe.module().Config, data, _source_of(layers, overrides)), recipe


def _without_header(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in HEADER_KEYS}


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _source_of(layers: list[tuple[str, dict]], overrides: list[str]):
    """loc -> where that key was set last: an override, the user's file, or the recipe YAML."""

    def source(loc: tuple) -> str:
        dotted = ".".join(str(p) for p in loc)
        for item in reversed(overrides):
            key = item.split("=", 1)[0].strip()
            if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
                return f"override '{item}'"
        for path, data in reversed(layers):
            if _has(data, loc):
                return path
        return layers[-1][0]

    return source


def _has(data: dict, loc: tuple) -> bool:
    node = data
    for part in loc:
        if not isinstance(node, dict) or str(part) not in node:
            return False
        node = node[str(part)]
    return True
