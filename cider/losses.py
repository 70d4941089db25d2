"""CIDer's training losses (docs/cider.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def representation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 − mean cosine(student, sg(teacher)) along the feature axis (eps 1e-8)."""
    return 1.0 - F.cosine_similarity(student, teacher.detach(), dim=-1, eps=1e-8).mean()


def attention_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(softmax(sg(teacher)) ‖ softmax(student)) over keys, summed and divided by B·H.

    Both are the last MCT layer's raw (B·H, 3n, 3n) scores over all pairs, unmasked (Q-14);
    ``batchmean`` divides by the leading size B·H.
    """
    return F.kl_div(
        F.log_softmax(student, dim=-1),
        F.softmax(teacher.detach(), dim=-1),
        reduction="batchmean",
    )


def reconstruction_loss(
    recon: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """Mean SmoothL1 (β = 1) over the dropped elements; 0 when nothing was dropped.

    recon/target (B, T, D); valid/keep (B, T) original validity and keep masks. The denominator
    is (#dropped positions × D) + 1e-6, as in the reference.
    """
    dropped = (valid.to(recon.dtype) - keep.to(recon.dtype)).unsqueeze(-1).expand_as(recon)
    total = F.smooth_l1_loss(recon * dropped, target * dropped, reduction="sum", beta=1.0)
    return total / (dropped.sum() + 1e-6)


@dataclass(frozen=True)
class LossWeights:
    """λ_rep, λ_attn, λ_rec of the missing-view objective."""

    joint_rep: float = 0.5
    attn: float = 0.1
    recon: float = 0.6000000000000001
