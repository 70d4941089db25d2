"""EMT-DLFR's training objective: task losses, high-level attraction, low-level reconstruction.

Per batch, with both views through the model (``EMTDLFR.forward``):

    total = L_task(pred_m) + w_attra · (Σ_X L_attra_X + L_task(pred)) + w_recon · L_recon

- ``L_task`` is L1 for regression (the original) or cross-entropy for the class heads;
- the complete-view task loss sits *inside* the attraction term, so ``w_attra`` scales it too;
- ``L_attra_X`` for X in (flattened GMC, [CLS], audio, video) is SimSiam's symmetric negative
  cosine between one view's predictor output and the other view's detached projection;
- ``L_recon`` sums, over text / audio / video, SmoothL1 (β = 1) between the reconstruction of the
  incomplete view and the complete view's features, counted only at the *dropped* positions and
  divided by (dropped positions × feature width + 1e-6): exactly 0 when nothing was dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from baselines.emt_dlfr.model import SIMSIAM_INPUTS

RECON_EPS = 1e-6


def attraction(
    p_missing: torch.Tensor, z: torch.Tensor, p: torch.Tensor, z_missing: torch.Tensor
) -> torch.Tensor:
    """−½ [mean cos(p_m, z) + mean cos(p, z_m)], cosine along the feature dim (z detached)."""
    return -0.5 * (
        F.cosine_similarity(p_missing, z.detach(), dim=1, eps=1e-8).mean()
        + F.cosine_similarity(p, z_missing.detach(), dim=1, eps=1e-8).mean()
    )


def masked_reconstruction(
    recon: torch.Tensor, target: torch.Tensor, dropped: torch.Tensor
) -> torch.Tensor:
    """SmoothL1 summed over the dropped positions' elements / (their count + 1e-6).

    recon, target (B, T, d); dropped (B, T) with 1 where a valid position was dropped.
    """
    mask = dropped.to(recon.dtype).unsqueeze(-1).expand_as(recon)
    loss = F.smooth_l1_loss(recon * mask, target * mask, reduction="sum", beta=1.0)
    return loss / (mask.sum() + RECON_EPS)


@dataclass(frozen=True)
class ReconTargets:
    """Targets of the low-level restoration and the positions that count (1 = dropped)."""

    text: torch.Tensor
    """(B, n-1, H) detached complete-view BERT sequence (positions 1..n-1)."""
    text_dropped: torch.Tensor
    """(B, n-1)"""
    audio: torch.Tensor
    """(B, L_a, d_a) complete audio features."""
    audio_dropped: torch.Tensor
    vision: torch.Tensor
    vision_dropped: torch.Tensor


@dataclass(frozen=True)
class DLFRLosses:
    """The parts of the objective (all scalar tensors with grad where they have one)."""

    total: torch.Tensor
    task_missing: torch.Tensor
    task_complete: torch.Tensor
    attraction: dict[str, torch.Tensor]
    reconstruction: dict[str, torch.Tensor]

    def detached(self) -> DLFRLosses:
        """The same values without their autograd graph (safe to keep between steps)."""
        return DLFRLosses(
            self.total.detach(),
            self.task_missing.detach(),
            self.task_complete.detach(),
            {k: v.detach() for k, v in self.attraction.items()},
            {k: v.detach() for k, v in self.reconstruction.items()},
        )


def dlfr_objective(
    out: Mapping[str, torch.Tensor],
    targets: ReconTargets,
    task_loss: Callable[[torch.Tensor], torch.Tensor],
    attra_weight: float,
    recon_weight: float,
) -> DLFRLosses:
    """The total loss of one batch from the merged outputs of both views.

    ``task_loss`` maps a head output (B, outputs) to the task loss against the batch's labels.
    Sequences of the reconstructions may be shorter than the targets (the packed encoder cuts
    them to the batch's longest stream); targets and masks are cut to match.
    """
    task_missing = task_loss(out["pred_m"])
    task_complete = task_loss(out["pred"])
    attra = {
        x: attraction(out[f"p_{x}_m"], out[f"z_{x}"], out[f"p_{x}"], out[f"z_{x}_m"])
        for x in SIMSIAM_INPUTS
    }
    t_a = out["audio_recon"].shape[1]
    t_v = out["video_recon"].shape[1]
    recon = {
        "text": masked_reconstruction(out["text_recon"], targets.text, targets.text_dropped),
        "audio": masked_reconstruction(
            out["audio_recon"], targets.audio[:, :t_a], targets.audio_dropped[:, :t_a]
        ),
        "vision": masked_reconstruction(
            out["video_recon"], targets.vision[:, :t_v], targets.vision_dropped[:, :t_v]
        ),
    }
    l_attra = torch.stack(list(attra.values())).sum() + task_complete
    l_recon = torch.stack(list(recon.values())).sum()
    total = task_missing + attra_weight * l_attra + recon_weight * l_recon
    return DLFRLosses(total, task_missing, task_complete, attra, recon)
