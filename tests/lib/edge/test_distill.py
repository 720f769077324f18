"""Distillation pulls the student's predictions towards the teacher's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from labcli.edge import distill, nets


def test_kd_loss_is_zero_when_the_student_matches_the_teacher_soft_only():
    logits = torch.randn(8, 10)
    labels = torch.randint(0, 10, (8,))
    assert distill.kd_loss(logits, logits, labels, temperature=4.0, alpha=1.0).abs() < 1e-6
    mixed = distill.kd_loss(logits, logits, labels, temperature=4.0, alpha=0.5)
    assert torch.allclose(mixed, 0.5 * F.cross_entropy(logits, labels))


def test_distilled_student_agrees_more_with_its_teacher():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(96, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (96,), generator=g)
    teacher = nets.build("cnn", seed=1, width=4)  # an untrained teacher: its outputs are the only signal
    student = nets.build("cnn", seed=2, width=2)

    def kl():
        with torch.no_grad():
            return F.kl_div(F.log_softmax(student(X), 1), F.log_softmax(teacher(X), 1), log_target=True, reduction="batchmean")

    before = kl()
    distill.distill(student, teacher, X, y, epochs=3, alpha=1.0, batch_size=32)
    assert kl() < 0.5 * before
