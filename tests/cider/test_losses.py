"""Loss values against hand computation (docs/cider.md)."""

from __future__ import annotations

import math

import torch

from cider.losses import attention_loss, reconstruction_loss, representation_loss


def test_kl_divisor_is_b_times_h_and_direction_teacher_to_student() -> None:
    torch.manual_seed(0)
    bh, t = 6, 5  # e.g. B = 3, H = 2
    student, teacher = torch.randn(bh, t, t), torch.randn(bh, t, t)
    total = 0.0
    for g in range(bh):
        for i in range(t):
            p = [math.exp(x) for x in teacher[g, i].tolist()]
            q = [math.exp(x) for x in student[g, i].tolist()]
            sp, sq = sum(p), sum(q)
            total += sum((a / sp) * (math.log(a / sp) - math.log(b / sq)) for a, b in zip(p, q))
    assert math.isclose(float(attention_loss(student, teacher)), total / bh, rel_tol=1e-5)


def test_kl_teacher_is_detached() -> None:
    student = torch.randn(2, 3, 3, requires_grad=True)
    teacher = torch.randn(2, 3, 3, requires_grad=True)
    attention_loss(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None


def test_reconstruction_denominator() -> None:
    recon = torch.tensor([[[1.0, 3.0], [0.0, 0.0], [5.0, 5.0]]])  # (1, 3, 2)
    target = torch.tensor([[[0.5, 0.0], [9.0, 9.0], [5.0, 2.0]]])
    valid = torch.tensor([[1, 1, 0]])
    keep = torch.tensor([[0, 1, 0]])  # only position 0 was dropped
    # SmoothL1(β=1): |0.5| → 0.5·0.25 = 0.125; |3| → 2.5. Denominator 1 position × 2 + 1e-6.
    expected = (0.125 + 2.5) / (2 + 1e-6)
    assert math.isclose(
        float(reconstruction_loss(recon, target, valid, keep)), expected, rel_tol=1e-6
    )
    # Nothing dropped → 0.
    assert float(reconstruction_loss(recon, target, valid, valid)) == 0.0


def test_representation_loss_cosine_and_detached_teacher() -> None:
    student = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 2.0], [2.0, 2.0]], requires_grad=True)
    loss = representation_loss(student, teacher)
    assert math.isclose(float(loss.detach()), 1 - (0.0 + 1.0) / 2, abs_tol=1e-6)
    loss.backward()
    assert teacher.grad is None and student.grad is not None
