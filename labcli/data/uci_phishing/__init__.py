"""UCI Phishing Websites (Mohammad, Thabtah, McCluskey), 11,055 rows of 30 ternary features, shipped gzipped.

    from labcli.data import uci_phishing
    X, y, names = uci_phishing.read()    # X [11055, 30] in {-1, 0, 1}; y 1 = phishing; the 30 feature names

The file holds 5,849 distinct (features, label) rows; de-duplicating is the caller's choice (`lab detect phishing`
does it before splitting).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labcli.data.files import check_columns, read_csv, source
from labcli.errors import UserError

FILE = Path(__file__).parent / "phishing_websites.csv.gz"


def read(data: str = "uci_phishing") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(X, y with 1 = phishing, feature names) from the shipped file or a CSV like it (30 features + Result, -1 = phishing)."""
    path = source(data, "uci_phishing", FILE)
    df = read_csv(path)
    check_columns(df, 31, path, "the phishing task (30 features + Result)", "labcli/data/uci_phishing/README.md")
    try:
        values = df.to_numpy(dtype=float)
    except ValueError:
        raise UserError(f"{path} has non-numeric values", "features and Result must be -1, 0 or 1") from None
    return values[:, :30], (values[:, 30] == -1).astype(int), list(df.columns[:30])
