"""Published tables come from committed data: re-render them, or check that the markdown still matches.

    python -m labcli.devtools.results            # check every table block (exit 1 on a difference)
    python -m labcli.devtools.results --write    # re-render the blocks from their data files

A table in docs/results*.md is a block whose opening comment says where its rows come from:

    <!-- table: {file: data/bench-optimizer.json, rows: summary.cells, columns: [optimizer, final_loss]} -->
    ...rendered rows (never edited by hand)...
    <!-- end table -->

`file` is relative to the markdown file; it holds `{"command": "the exact lab command", "summary":
<the run's summary.json>, ...}`. `rows` is a dotted path to a list of dicts (default `rows`);
`columns` picks and orders keys (default: all); `labels` renames them for the header; `where`
keeps rows whose keys equal the given values. Under the table: the data file and its command.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

from labcli.eval.tables import markdown_table

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"(<!-- table: (?P<spec>.*?) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def dig(data, path: str):
    for part in path.split(".") if path else []:
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def render(spec: dict, folder: Path) -> str:
    source = folder / spec["file"]
    data = json.loads(source.read_text(encoding="utf-8"))
    rows = dig(data, spec.get("rows", "rows"))
    for key, value in (spec.get("where") or {}).items():
        rows = [r for r in rows if r.get(key) == value]
    columns = spec.get("columns") or list(dict.fromkeys(k for r in rows for k in r))
    labels = spec.get("labels") or columns
    table = markdown_table([{label: r.get(c) for label, c in zip(labels, columns)} for r in rows], labels)
    command = data.get("command", "(no command recorded)")
    return f"{table}\n<sub>data: [{spec['file']}]({spec['file']}) · command: `{command}`</sub>\n"


def documents() -> list[Path]:
    return sorted([*DOCS.glob("*results*.md"), *DOCS.glob("results/*.md")])


HAND_TABLE = re.compile(r"^\|.*\|\n\|[-| :]+\|$", re.M)  # a markdown table's header and rule


def check(write: bool = False) -> list[str]:
    """Every block whose markdown differs from its data (rewritten in place with write=True), and
    every table written by hand outside a block (it has no data file to come from)."""
    stale = []
    for doc in documents():
        text = doc.read_text(encoding="utf-8")
        if HAND_TABLE.search(BLOCK.sub("", text)):
            stale.append(f"{doc.relative_to(DOCS.parent)}: a table outside a <!-- table: --> block (no data file)")

        def replace(match: re.Match) -> str:
            spec = yaml.safe_load(match["spec"])
            fresh = render(spec, doc.parent)
            if fresh != match["body"]:
                stale.append(f"{doc.relative_to(DOCS.parent)}: table from {spec['file']}")
            return match.group(1) + fresh + match.group(4)

        new = BLOCK.sub(replace, text)
        if write and new != text:
            doc.write_text(new, encoding="utf-8")
    return stale


def main() -> int:
    write = "--write" in sys.argv
    stale = check(write)
    for line in stale:
        print(("re-rendered " if write else "differs from its data: ") + line)
    if not stale:
        print("every table matches its data")
    return 1 if stale and not write else 0


if __name__ == "__main__":
    sys.exit(main())
