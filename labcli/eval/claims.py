"""A paper's claims checked at small scale: one table shape for every `lab reproduce PAPER`.

Each claim is a row: claim | paper (its number and setting) | our setting | ours | verdict, where the
verdict is `holds`, `partly` or `does not hold`. `verdict(value, threshold)` decides it from a
number and the paper's threshold, with an optional looser `partly` bound; a report states the scale
gap (what differs from the paper) under the table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from labcli.eval.tables import markdown_table, print_table

Verdict = Literal["holds", "partly", "does not hold"]
COLUMNS = ["claim", "paper", "our setting", "ours", "verdict"]


@dataclass
class Claim:
    claim: str  # what the paper says, in a few words
    paper: str  # the paper's number and the setting it was measured in
    setting: str  # ours: model, data, steps
    ours: str  # our number(s), formatted
    verdict: Verdict

    def row(self) -> dict:
        d = asdict(self)
        return {"claim": d["claim"], "paper": d["paper"], "our setting": d["setting"], "ours": d["ours"],
                "verdict": d["verdict"]}


def verdict(value: float | None, threshold: float, *, above: bool = True, partly: float | None = None) -> Verdict:
    """`holds` when value is above (or below, above=False) threshold; `partly` when it passes the
    looser `partly` bound instead; else `does not hold`. A missing value never holds."""
    if value is None or value != value:
        return "does not hold"

    def passes(bound: float) -> bool:
        return value > bound if above else value < bound

    if passes(threshold):
        return "holds"
    if partly is not None and passes(partly):
        return "partly"
    return "does not hold"


def all_of(*verdicts: Verdict) -> Verdict:
    """One verdict for a claim with several parts: holds if all hold, does not hold if none does."""
    if all(v == "holds" for v in verdicts):
        return "holds"
    if all(v == "does not hold" for v in verdicts):
        return "does not hold"
    return "partly"


def rows(claims: list[Claim]) -> list[dict]:
    return [c.row() for c in claims]


def markdown(claims: list[Claim], scale_gap: str = "") -> str:
    """The claims table for report.md, with the scale gap stated under it."""
    gap = f"\n**Scale gap.** {scale_gap}\n" if scale_gap else ""
    return markdown_table(rows(claims), COLUMNS) + gap


def print_claims(claims: list[Claim], title: str) -> None:
    """The headline claims table in the terminal, at the end of a run."""
    print_table(rows(claims), COLUMNS, title=title)
