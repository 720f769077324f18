"""`lab detect intrusion|spam|phishing` on the shipped data, through the real CLI."""

from __future__ import annotations

import json

import pytest


def summary(proc_dir):
    return json.loads((proc_dir / "summary.json").read_text())


def assert_one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for word in words:
        assert word in proc.stderr


def test_intrusion_tree_and_isolation_forest(run_lab, tmp_path):
    out = tmp_path / "intr"
    run_lab("detect", "intrusion", "--output", str(out), "supervised=[tree]", "unsupervised=[iforest]")
    s = summary(out)
    tree = next(r for r in s["supervised"] if r["model"] == "tree" and r["test set"] == "KDDTest+")
    hard = next(r for r in s["supervised"] if r["model"] == "tree" and r["test set"] == "KDDTest-21")
    iforest = next(r for r in s["anomaly"] if r["detector"] == "iforest" and r["test set"] == "KDDTest+")
    assert s["test_rows"] == 22544 and s["kddtest21_rows"] == 11850 and s["train_rows"] == 25192
    assert 0.75 <= tree["accuracy"] <= 0.85
    assert hard["accuracy"] < tree["accuracy"]
    assert iforest["auroc"] > 0.9
    assert (out / "report.md").read_text().count("KDDTest-21") >= 2
    assert (out / "supervised_accuracy.png").stat().st_size > 0 and (out / "anomaly_roc.png").stat().st_size > 0


def test_intrusion_small_pca_and_autoencoder(run_lab, tmp_path):
    out = tmp_path / "intr_small"
    run_lab("detect", "intrusion", "--output", str(out), "supervised=[logistic]", "unsupervised=[pca,autoencoder,ocsvm]",
            "max_train_rows=3000", "ae_epochs=2", "ocsvm_rows=500")
    rows = {r["detector"]: r["auroc"] for r in summary(out)["anomaly"] if r["test set"] == "KDDTest+"}
    assert set(rows) == {"pca", "autoencoder", "ocsvm"}
    assert all(0.5 < v <= 1.0 for v in rows.values())


def test_spam_models(run_lab, tmp_path):
    out = tmp_path / "spam"
    run_lab("detect", "spam", "--output", str(out), "transformer.epochs=1", "transformer.layers=1", "transformer.hidden=32")
    s = summary(out)
    assert s["raw_messages"] == 5574 and 5100 < s["after_dedupe"] < 5574
    models = {r["model"]: r for r in s["models"]}
    assert models["naive_bayes"]["f1 (spam)"] > 0.9
    assert models["char_svm"]["f1 (spam)"] > 0.9
    assert models["transformer"]["auroc"] > 0.8
    assert (out / "spam_f1.png").exists() and "de-duplicat" in (out / "report.md").read_text()


def test_phishing_tree_models(run_lab, tmp_path):
    out = tmp_path / "phish"
    run_lab("detect", "phishing", "--output", str(out), "cv_folds=0", "models=[tree,forest]")
    s = summary(out)
    assert s["raw_rows"] == 11055 and s["rows_used"] == 5849
    models = {r["model"]: r for r in s["models"]}
    assert models["forest"]["accuracy"] > 0.9 and models["tree"]["accuracy"] > 0.85
    assert (out / "feature_importance.png").exists()


@pytest.mark.parametrize("args, words", [
    (("intrusion", "data=no_such_set"), ["unknown data set 'no_such_set'"]),
    (("spam", "models=[bert-large]"), ["unknown spam model 'bert-large'"]),
])
def test_bad_names_fail_with_one_line(run_lab, args, words):
    assert_one_line_error(run_lab("detect", *args, check=False), *words)


def test_wrong_feature_count_fails_with_one_line(run_lab, tmp_path):
    bad = tmp_path / "ten_columns.csv"
    bad.write_text(",".join(f"f{i}" for i in range(10)) + "\n" + ",".join("1" for _ in range(10)) + "\n")
    assert_one_line_error(run_lab("detect", "phishing", f"data={bad}", check=False), "has 10 columns", "needs 31")


def test_loaders_and_names_raise_user_errors(tmp_path):
    """The same checks in-process (no CLI start-up): wrong column counts, unreadable files, bad labels and names."""
    from labcli.detect import common, datasets
    from labcli.errors import UserError

    bad = tmp_path / "ten_columns.csv"
    bad.write_text(",".join("1" for _ in range(10)) + "\n")
    with pytest.raises(UserError, match="needs 43"):
        datasets.load_nsl_kdd("test", str(bad))
    binary = tmp_path / "binary.tsv"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage\x00")
    with pytest.raises(UserError, match="cannot read|columns|label"):
        datasets.load_sms_spam(str(binary))
    labels = tmp_path / "labels.tsv"
    labels.write_text("ham\thello\nmaybe\tworld\n")
    with pytest.raises(UserError, match="label 'maybe'"):
        datasets.load_sms_spam(str(labels))
    with pytest.raises(UserError, match="unknown data set"):
        datasets.load_phishing("uci_phish")
    with pytest.raises(UserError, match="unknown supervised model 'svm9'"):
        common.choose(["tree", "svm9"], ["tree", "forest"], "supervised model")
