"""labcli/data/nsl_kdd: the shipped files and a user's test file in the same format."""

from __future__ import annotations

import pytest

from labcli.data import nsl_kdd
from labcli.errors import UserError


def test_shipped_splits():
    train, test = nsl_kdd.read("train"), nsl_kdd.read("test")
    assert train.shape == (25192, 43) and test.shape == (22544, 43) and list(test.columns) == nsl_kdd.COLUMNS
    assert int((test["difficulty"] < 21).sum()) == 11850 and int((train["label"] == "normal").sum()) == 13449


def test_wrong_column_count_and_missing_file(tmp_path):
    bad = tmp_path / "ten.csv"
    bad.write_text(",".join("1" for _ in range(10)) + "\n")
    with pytest.raises(UserError, match="has 10 columns but NSL-KDD .* needs 43"):
        nsl_kdd.read("test", str(bad))
    with pytest.raises(UserError, match="unknown data set"):
        nsl_kdd.read("test", str(tmp_path / "nope.csv"))
