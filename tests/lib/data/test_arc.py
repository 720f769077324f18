import pytest

from labcli.data import arc


@pytest.mark.parametrize("level,split,count", [("easy", "train", 2251), ("easy", "test", 2376),
                                               ("challenge", "train", 1119), ("challenge", "test", 1172)])
def test_counts_equal_the_official_sizes(level, split, count):
    rows = arc.read(split, level)
    assert len(rows) == count and all(r["answer"].startswith("answer") for r in rows)
    assert not any(r["question"].startswith("Please choose") for r in rows)
