"""Knowledge distillation (Hinton, Vinyals, Dean 2015): the student matches the teacher's temperature-softened
class probabilities (KL, scaled by T^2 so its gradients keep their size) mixed with cross-entropy on the labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from labcli.detect.vision import batches


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float,
            alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1), log_target=True,
                    reduction="batchmean")
    return alpha * t * t * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def distill(student: nn.Module, teacher: nn.Module, X, y, *, epochs: int, temperature: float = 4.0, alpha: float = 0.9,
            lr: float = 1e-3, batch_size: int = 64, seed: int = 0) -> nn.Module:
    """Adam training of `student` on kd_loss against the frozen `teacher` (the same batches as
    labcli.detect.vision.train_model, so a label-only student is a fair baseline)."""
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    teacher.eval()
    for _ in range(epochs):
        for idx in batches(len(X), batch_size, gen):
            with torch.no_grad():
                target = teacher(X[idx])
            student.train()
            loss = kd_loss(student(X[idx]), target, y[idx], temperature, alpha)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return student.eval()
