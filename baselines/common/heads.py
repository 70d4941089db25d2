"""The prediction head's loss, outputs and scores across the three tasks.

Every baseline here has one head whose width is 1 for regression (a score) and C for the
classification tasks (logits); these helpers keep the per-task handling of that head in one place.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mer_bench.protocol import Task

TASK_LOSS: Mapping[Task, type[nn.Module]] = {
    Task.BINARY: nn.CrossEntropyLoss,
    Task.SEVEN: nn.CrossEntropyLoss,
    Task.REGRESSION: nn.L1Loss,
}
"""MMSA's losses: L1 on the score for regression, cross-entropy on the class label otherwise."""


def head_loss(
    loss: nn.Module, task: Task, output: torch.Tensor, label: torch.Tensor
) -> torch.Tensor:
    """``loss`` of the head's output: the flattened score against the label in the output's
    dtype for regression, the (B, C) logits against the class index otherwise."""
    if task is Task.REGRESSION:
        return loss(output.view(-1), label.view(-1).to(output.dtype))
    return loss(output, label)


def head_outputs(task: Task, output: torch.Tensor) -> dict[str, torch.Tensor]:
    """What ``predict`` returns: ``score`` (B,) for regression, ``logits`` (B, C) otherwise."""
    if task is Task.REGRESSION:
        return {"score": output.view(-1)}
    return {"logits": output}


def softmax_scores(task: Task, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N,) scores for regression; (N, C) float32 softmax of the ``logits`` otherwise."""
    if task is Task.REGRESSION:
        return np.asarray(outputs["score"]).reshape(-1)
    logits = torch.from_numpy(np.asarray(outputs["logits"], dtype=np.float32))
    return F.softmax(logits, dim=-1).numpy()


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits in float64, shifted by each row's maximum."""
    logits = np.asarray(logits, dtype=np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
