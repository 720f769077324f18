"""labcli/data/sms_spam: the one reader and the one de-duplication rule of the SMS Spam Collection."""

from __future__ import annotations

import pytest

from labcli.data import sms_spam
from labcli.errors import UserError


def test_shipped_collection_counts():
    texts, labels = sms_spam.read(dedupe=False)
    assert len(texts) == 5574 and int(labels.sum()) == 747
    texts, labels = sms_spam.read()
    assert len(texts) == 5171 and len(set(texts)) == 5171 and len(labels) == 5171
    assert any(t != t.strip() for t in texts)  # texts are kept byte for byte (trailing blanks too)


def test_deduplicate_keeps_the_first_occurrence_and_its_label(tmp_path):
    path = tmp_path / "sms.tsv"
    path.write_text("spam\tWIN now\nham\thello\nham\tWIN now\r\nham\thello \n")
    texts, labels = sms_spam.read(str(path))
    assert texts == ["WIN now", "hello", "hello "] and labels.tolist() == [1, 0, 0]


@pytest.mark.parametrize("content, message", [(b"\xff\xfe\x00\x81garbage\x00", "cannot read"),
                                              (b"ham\thello\nmaybe\tworld\n", "2 has label 'maybe'"),
                                              (b"ham hello\n", "1 has no tab"), (b"\n\n", "holds no messages")])
def test_bad_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        sms_spam.read(str(path))


def test_unknown_name_is_a_user_error():
    with pytest.raises(UserError, match="unknown data set 'sms'"):
        sms_spam.read("sms")
