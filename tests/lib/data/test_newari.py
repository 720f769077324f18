"""Shipped Newari data: readable, split deterministically without crossing English strings; bad TSVs fail clearly."""

import pytest

from labcli.data.newari import load_pairs, read_tsv, split, split_of
from labcli.errors import UserError


def test_shipped_corpus_and_split():
    pairs = load_pairs(None)
    assert len(pairs) == 10132
    assert {p.domain for p in pairs} == {"conversation", "general", "lexicon", "software_ui"}
    parts = split(pairs)
    sizes = {k: len(v) / len(pairs) for k, v in parts.items()}
    assert 0.75 < sizes["train"] < 0.85 and 0.07 < sizes["test"] < 0.13
    seen = {}
    for name, rows in parts.items():
        for p in rows:
            assert seen.setdefault(p.en.lower().strip(), name) == name, "an English string crossed splits"
    assert split_of("Hello") == split_of("hello ")


@pytest.mark.parametrize("content,message", [
    (b"en\tnew\nhello\t\xe0\xa4\x95\n", "missing column(s) domain"),
    (b"en\tnew\tdomain\nhello\t\tgeneral\n", ":2: empty new side"),
    (b"en\tnew\tdomain\nok\t\xe0\xa4\x95\tgeneral\nbad\t\xff\xfe\tgeneral\n", ":3: not UTF-8"),
    (b"en\tnew\tdomain\nonly-one-field\n", ":2: expected 3 tab-separated fields"),
])
def test_bad_tsv_names_the_line(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        read_tsv(path)
    assert message in str(err.value) and "hint:" in str(err.value)


def test_files_as_editors_write_them_are_read(tmp_path):
    """UTF-8 with a byte-order mark, CRLF line ends, trailing spaces and no final newline (Excel, Notepad)."""
    plain = "en\tnew\tdomain\nhello\tज्वजलपा\tconversation\nthanks \tसुभाय्\tconversation"
    path = tmp_path / "windows.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + plain.replace("\n", "\r\n").encode("utf-8"))
    rows = read_tsv(path)
    assert [(r.en, r.new, r.domain) for r in rows] == [("hello", "ज्वजलपा", "conversation"), ("thanks", "सुभाय्", "conversation")]
    latin = tmp_path / "latin1.tsv"
    latin.write_bytes("en\tnew\tdomain\ncafé\tx\tgeneral\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.tsv:2: not UTF-8 text"):
        read_tsv(latin)
