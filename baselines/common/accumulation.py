"""Gradient accumulation with the trailing incomplete group dropped, as MMSA's trainers do it."""

from __future__ import annotations

import torch


class GradientGroups:
    """Groups of ``size`` consecutive training batches whose gradients are summed.

    Each batch's (batch-mean) loss is back-propagated on top of the group's running gradient;
    the optimiser steps once per full group. A trailing incomplete group is never stepped: the
    originals zero it when the next group starts, so :meth:`discard` drops it.

    Use: :meth:`start_batch` before the forward pass, ``loss.backward()`` (and any clipping of
    the running gradient), then :meth:`end_batch`.
    """

    def __init__(self) -> None:
        self.pending = 0
        """Batches back-propagated in the current group."""

    def start_batch(self, optimizer: torch.optim.Optimizer) -> None:
        """A new group starts from zero gradients."""
        if self.pending == 0:
            optimizer.zero_grad(set_to_none=True)

    def end_batch(self, optimizer: torch.optim.Optimizer, size: int) -> None:
        """Count the batch just back-propagated; step after the ``size``-th of the group."""
        self.pending += 1
        if self.pending == size:
            optimizer.step()
            self.pending = 0

    def discard(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Drop an incomplete group's gradients without a step (none to drop: no-op)."""
        if self.pending and optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        self.pending = 0
