"""The layer graph of labcli, and every import that points upward.

    python -m labcli.devtools.imports          # the graph, then the violations (exit 1 if any)

Layers, bottom to top:
  0 base       errors, paths, config, runs (run folders, resume, atomic writes)
  1 library    engine, kernels, serving, sims, rl, models, data, eval, optim, detect, reasoning, ...
  2 recipe     labcli/recipes/<verb>/<name>.py: may import layers 0-1, never another recipe
  3 app        cli, launch, registry, listing, envinfo, devtools: the command tree
An import is upward when it names a higher layer, or a recipe imports another recipe.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = {"errors", "paths", "config", "runs"}
APP = {"cli", "launch", "registry", "listing", "envinfo", "devtools", "__main__", "check"}
LAYERS = ["base", "library", "recipe", "app"]


def module_name(path: Path) -> str:
    parts = ("labcli",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top == "recipes":
        return "recipe" if len(parts) > 3 else "app"  # labcli.recipes / labcli.recipes.<verb> are bare packages
    if top in BASE or top == "":
        return "base"
    return "app" if top in APP else "library"


def group(module: str) -> str:
    """The graph's node: a package (labcli.engine), or one recipe (recipes.bench.grpo)."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "recipes":
        return ".".join(parts[1:4])
    return ".".join(parts[:2])


def imports_of(path: Path) -> list[tuple[str, int]]:
    """labcli modules imported anywhere in the file (functions too: a lazy import is still a dependency)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("labcli")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("labcli") and node.level == 0:
            found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return found


def resolve(name: str, known: set[str]) -> str:
    """`labcli.eval.plots.save` -> `labcli.eval.plots` (the longest known module prefix)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in known:
            return ".".join(parts[:n])
    return name


def analyse() -> tuple[Counter, list[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py") if "assets" not in p.parts}
    known = set(files)
    edges, violations = Counter(), []
    for source, path in sorted(files.items()):
        for name, line in imports_of(path):
            target = resolve(name, known)
            a, b = group(source), group(target)
            if a != b:
                edges[(a, b)] += 1
            la, lb = LAYERS.index(layer(source)), LAYERS.index(layer(target))
            where = f"{path.relative_to(ROOT.parent)}:{line}"
            if lb > la:
                violations.append(f"{where}: {layer(source)} {source} imports {layer(target)} {target}")
            elif layer(source) == layer(target) == "recipe" and a != b:
                violations.append(f"{where}: recipe {source} imports another recipe {target}")
    return edges, violations


def main() -> int:
    edges, violations = analyse()
    by_layer: dict[str, list[str]] = {name: [] for name in LAYERS}
    nodes = {n for edge in edges for n in edge}
    for node in sorted(nodes):
        by_layer[layer("labcli." + node if not node.startswith("labcli") else node)].append(node)
    for name in reversed(LAYERS):
        print(f"[{name}]")
        for node in by_layer[name]:
            targets = sorted(b for (a, b) in edges if a == node)
            print(f"  {node} -> {', '.join(targets) if targets else '(nothing in labcli)'}")
    print(f"\n{len(violations)} upward import(s)")
    for v in violations:
        print(f"  {v}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
