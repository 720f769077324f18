"""One way to show a table: markdown for reports, the same rows printed in the terminal (rich).

Rows are dicts (columns default to their keys in order) or lists in the order of given columns.
Floats print with 4 significant digits (one decimal from 1000 up), None as "-".
`delta` renders a relative change vs a baseline.
"""

from __future__ import annotations

import re
from typing import Sequence


def fmt(value, digits: int | None = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if digits is not None:
            return f"{value:.{digits}f}"
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def delta(value: float | None, base: float | None) -> str:
    """'+12.3%': how much `value` differs from `base`; '-' when either is missing."""
    if value is None or base is None or base == 0:
        return "-"
    return f"{100 * (value - base) / base:+.1f}%"


def _cells(rows: Sequence, columns: Sequence[str] | None) -> tuple[list[str], list[list[str]]]:
    """Rows as dicts (columns default to their keys) or as lists in the order of `columns`."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[fmt(row.get(c, "")) for c in columns] if isinstance(row, dict) else [fmt(v) for v in row] for row in rows]
    return list(columns), cells


def markdown_table(rows: Sequence, columns: Sequence[str] | None = None) -> str:
    """Rows (dicts, or lists matching `columns`) -> a GitHub markdown table."""
    if not rows:
        return "_(no rows)_\n"
    columns, cells = _cells(rows, columns)
    cell = lambda text: re.sub(r"(?<!\\)\|", r"\\|", text).replace("\n", " ")  # noqa: E731  a bare pipe would end the cell
    lines = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def print_table(rows: Sequence, columns: Sequence[str] | None = None, title: str = "") -> None:
    """The same rows as a rich table in the terminal, never cut to the terminal's width."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    columns, cells = _cells(rows, columns)
    table = Table(title=title or None)
    for column in columns:
        table.add_column(escape(column), overflow="fold")
    for row in cells:
        table.add_row(*map(escape, row))  # cells are text: "[enforce fail at ...]" is not rich markup
    Console(width=max(120, sum(len(c) for c in columns) * 3)).print(table)


def progress_bar(label: str = "", *, transient: bool = False, stderr: bool = False):
    """The bar for work counted in cells (a bench's techniques, a detector's models): LABEL, bar,
    done/total, the current cell's description (`bar.update(task, description=...)`), elapsed time."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = ([TextColumn(f"[bold]{label}")] if label else []) + [BarColumn(), MofNCompleteColumn(),
                                                                  TextColumn("{task.description}"), TimeElapsedColumn()]
    return Progress(*columns, transient=transient, console=Console(stderr=True) if stderr else None)
