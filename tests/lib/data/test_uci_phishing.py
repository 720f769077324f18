"""labcli/data/uci_phishing: the shipped file and a user's CSV."""

from __future__ import annotations

import numpy as np
import pytest

from labcli.data import uci_phishing
from labcli.errors import UserError


def test_shipped_file():
    X, y, names = uci_phishing.read()
    assert X.shape == (11055, 30) and int(y.sum()) == 4898 and names[0] == "having_IP_Address"
    assert set(np.unique(X)) <= {-1.0, 0.0, 1.0} and len(np.unique(np.c_[X, y], axis=0)) == 5849


def test_bad_files(tmp_path):
    bad = tmp_path / "ten.csv"
    bad.write_text(",".join(f"f{i}" for i in range(10)) + "\n" + ",".join("1" for _ in range(10)) + "\n")
    with pytest.raises(UserError, match="has 10 columns .* needs 31"):
        uci_phishing.read(str(bad))
    text = tmp_path / "text.csv"
    text.write_text(",".join(f"f{i}" for i in range(31)) + "\n" + ",".join("x" for _ in range(31)) + "\n")
    with pytest.raises(UserError, match="non-numeric"):
        uci_phishing.read(str(text))
