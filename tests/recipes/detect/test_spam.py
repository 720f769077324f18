"""`lab detect spam` on the shipped SMS Spam Collection: a real run (slow) and one-line errors in-process."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_spam_models(run_lab, tmp_path):
    out = tmp_path / "spam"
    stdout = run_lab("detect", "spam", "--output", str(out), "transformer.epochs=1", "transformer.layers=1", "transformer.hidden=32").stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["raw_messages"] == 5574 and s["after_dedupe"] == 5171
    models = {r["model"]: r for r in s["models"]}
    assert models["naive_bayes"]["f1 (spam)"] > 0.9 and models["char_svm"]["f1 (spam)"] > 0.9 and models["transformer"]["auroc"] > 0.8
    assert "| naive_bayes |" in stdout and (out / "spam_f1.png").exists() and "de-duplicat" in (out / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["models=[bert-large]"], "key 'models.0' has bad value 'bert-large'"),
    (["models=[]"], "key 'models'"),
    (["data=missing.tsv"], "unknown data set 'missing.tsv'"),
])
def test_bad_settings_are_one_line_and_leave_no_run(lab_main, tmp_path, args, message):
    proc = lab_main("detect", "spam", *args)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_label_in_a_user_file_is_one_line(lab_main, tmp_path):
    (tmp_path / "sms.tsv").write_text("ham\thello\nmaybe\tworld\n")
    proc = lab_main("detect", "spam", "data=sms.tsv", "models=[naive_bayes]")
    assert proc.returncode == 2 and "sms.tsv:2 has label 'maybe'" in proc.stderr and not (tmp_path / "runs").exists()
