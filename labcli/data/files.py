"""Shared by the shipped tabular data sets' readers: a built-in name or a user's file, read with one-line errors."""

from __future__ import annotations

from pathlib import Path

from labcli.errors import UserError


def source(data: str, name: str, shipped: Path) -> Path:
    """The shipped file when `data` is the built-in `name`, else the user's file (which must exist)."""
    if data == name:
        return shipped
    path = Path(data).expanduser()
    if not path.is_file():
        raise UserError(f"unknown data set '{data}' (not a built-in name and no such file)",
                        f"use data={name} or a path to a file in that format")
    return path


def read_csv(path: Path, **kwargs):
    """pandas.read_csv with a one-line UserError for unreadable, empty or malformed files."""
    import pandas as pd

    try:
        return pd.read_csv(path, **kwargs)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot read {path}: {reason}", "pass a readable CSV file in the documented format") from None


def check_columns(df, expected: int, path: Path, what: str, readme: str) -> None:
    if df.shape[1] != expected:
        raise UserError(f"{path} has {df.shape[1]} columns but {what} needs {expected}",
                        f"give a file with the same columns as the shipped data (see {readme})")
