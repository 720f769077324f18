"""`lab distill kd`: its loss by hand and its errors in-process (fast), the real CLI at tiny size (slow)."""

from __future__ import annotations

import json

import pytest
import torch

from labcli.errors import UserError
from labcli.recipes.distill import kd

KD_SMOKE = ("train_size=200", "test_size=40", "teacher_size=mini", "--student", "nano", "latency_examples=2", "max_len=32",
            "vocab_size=500", "train.max_steps=5", "teacher_train.max_steps=5", "train.tensorboard=false",
            "teacher_train.tensorboard=false")


def test_kd_loss_is_hinton_by_hand():
    class Out:
        def __init__(self, logits, labels):
            self.logits = logits
            self.loss = torch.nn.functional.cross_entropy(logits, labels)

    student = torch.tensor([[1.0, 0.0]])
    teacher = torch.tensor([[0.0, 2.0]])
    batch = {"teacher_logits": teacher, "labels": torch.tensor([1])}
    loss = kd.kd_loss(temperature=2.0, alpha=0.5)(lambda **b: Out(student, b["labels"]), dict(batch))
    p_t = torch.softmax(teacher / 2, -1)
    p_s = torch.softmax(student / 2, -1)
    kl = float((p_t * (p_t.log() - p_s.log())).sum())
    ce = float(torch.nn.functional.cross_entropy(student, torch.tensor([1])))
    assert float(loss) == pytest.approx(0.5 * 4 * kl + 0.5 * ce, rel=1e-5)


def test_kd_bad_input(lab_main, tmp_path):
    result = lab_main("distill", "kd", "--task", "imdb")
    assert result.returncode == 2 and "unknown kd task 'imdb'" in result.stderr
    with pytest.raises(UserError, match="is not a classifier folder"):
        kd.load_teacher(str(tmp_path), "cpu")
    with pytest.raises(UserError, match="unknown model size 'huge'"):
        kd.bert("huge", None, 0, 2)


def test_sms_spam_split_is_deduplicated_and_fixed():
    train, test, names = kd.read_task("sms-spam", seed=0)
    assert (len(train), len(test), names) == (4136, 1035, ["ham", "spam"])
    assert not {t for t, _ in train} & {t for t, _ in test}


@pytest.mark.slow
def test_kd_smoke_then_reuse_the_teacher(run_lab, tmp_path):
    proc = run_lab("distill", "kd", "--task", "sms-spam", *KD_SMOKE, "--output", str(tmp_path / "kd1"))
    summary = json.loads((tmp_path / "kd1" / "summary.json").read_text())
    rows = summary["results"]
    assert len(rows) == 3 and summary["test_examples"] == 40
    teacher, plain, kd_student = rows.values()
    assert teacher["params"] > 5 * kd_student["params"] and plain["params"] == kd_student["params"]
    assert all(0 <= r["accuracy"] <= 1 and r["latency_ms"] > 0 for r in rows.values())
    for name in ("report.md", "accuracy.png", "teacher/config.json", "model/config.json"):
        assert (tmp_path / "kd1" / name).exists()
    assert "KD (T=2, alpha=0.5)" in proc.stdout
    run_lab("distill", "kd", "--task", "sms-spam", *KD_SMOKE, "--teacher", str(tmp_path / "kd1" / "teacher"),
            "baseline=false", "--output", str(tmp_path / "kd2"))
    assert len(json.loads((tmp_path / "kd2" / "summary.json").read_text())["results"]) == 2
