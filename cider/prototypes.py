"""Class prototypes and priors for CIDer's causal head (docs/cider.md).

Computed from the training split, or read from the reference's shipped ``.npy`` files
(layout in docs/cider.md) with ``ctx.options["cider_prototypes"]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mer_bench.data.streams import open_regular
from mer_bench.data.types import Split
from mer_bench.errors import ConfigError, DataError
from mer_bench.protocol import DataSetting, Distribution

CROSS_PREFIX = "[cross_dataset]"


@dataclass(frozen=True)
class Prototypes:
    """Class-conditional means μ_k (C, D) and the class prior π (C,), both float64."""

    means: np.ndarray
    prior: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.prior.shape[0])

    def training_tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-specific prototypes and the train prior, float32 (as the reference casts)."""
        return (
            torch.as_tensor(self.means, dtype=torch.float32, device=device),
            torch.as_tensor(self.prior, dtype=torch.float32, device=device),
        )

    def evaluation_tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Every stratum gets the unweighted mean of the *train* class means, uniform prior.

        The reference uses the evaluated split's own class means here (label leakage, Q-4).
        """
        c = self.num_classes
        mean = self.means.astype(np.float32).mean(axis=0, keepdims=True)
        protos = torch.as_tensor(np.repeat(mean, c, axis=0), device=device)
        return protos, torch.full((c,), 1.0 / c, dtype=torch.float32, device=device)


@torch.no_grad()
def pooled_text_features(
    encoder: nn.Module, text_bert: np.ndarray, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """(N, D_l) float64: mask-weighted mean of the encoder's last hidden state over valid tokens
    (the first of the reference's candidate recipes), computed with the encoder in eval mode (pretrained weights)."""
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        for start in range(0, text_bert.shape[0], batch_size):
            tb = torch.as_tensor(text_bert[start : start + batch_size], device=device).long()
            mask = tb[:, 1].float()
            hidden = encoder(
                input_ids=tb[:, 0], attention_mask=mask, token_type_ids=tb[:, 2]
            ).last_hidden_state
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
            out.append(pooled.double().cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(out).numpy()


def sample_vectors(text_pooled: np.ndarray, split: Split) -> np.ndarray:
    """(N, D) [text ; audio time-mean ; vision time-mean], the A/V means over *all* stored steps,
    padding included (that dilution is visible in the shipped files)."""
    audio = split.audio.astype(np.float64).mean(axis=1)
    vision = split.vision.astype(np.float64).mean(axis=1)
    return np.concatenate((text_pooled.astype(np.float64), audio, vision), axis=1)


def class_prototypes(vectors: np.ndarray, labels: np.ndarray, num_classes: int) -> Prototypes:
    """μ_k = mean of the vectors labelled k; π_k = class frequency. An absent class gets a zero
    prototype and prior 0 (it can then never be predicted through its stratum)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        raise DataError("cannot compute CIDer prototypes from an empty training split")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"training labels outside 0..{num_classes - 1}")
    one_hot = np.eye(num_classes, dtype=np.float64)[labels]  # (N, C)
    counts = one_hot.sum(axis=0)
    sums = one_hot.T @ vectors
    means = sums / np.maximum(counts, 1.0)[:, None]
    return Prototypes(means=means, prior=counts / labels.size)


def shipped_paths(root: Path, data: DataSetting, split: str = "train") -> tuple[list[Path], Path]:
    """The prototype files (k = 0..C−1) and the prior file of the reference layout.

    Cross-dataset files live under ``iid`` with the literal ``[cross_dataset]`` name prefix.
    """
    dataset, alignment, task = data.dataset.value, data.alignment.value, data.task.value
    num_classes = int(data.task.info.num_classes or 0)
    cross = data.distribution is Distribution.CROSS
    dist_dir = Distribution.IID.value if cross else data.distribution.value
    prefix = CROSS_PREFIX if cross else ""
    feats = Path(root) / f"{dataset}_feats" / dist_dir / task
    probs = Path(root) / f"{dataset}_probs" / dist_dir / task
    protos = [
        feats / f"{prefix}{dataset}_{split}_{task}_{alignment}_{k}.npy" for k in range(num_classes)
    ]
    return protos, probs / f"{prefix}{dataset}_train_{task}.npy"


MAX_PROTOTYPE_LEN = 1 << 20
"""Longest prototype vector read (the reference's are a few thousand values)."""


def _load_vector(path: Path) -> np.ndarray:
    """A 1-D float vector from a ``.npy`` file, checked before anything is allocated.

    The header (dtype, shape) is read and compared with the file's size first; an ``.npz``
    archive, a pickled array or any other file under a ``.npy`` name is refused.
    """
    if not path.exists():
        raise DataError(f"CIDer prototype file not found: {path}")
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version in ((2, 0), (3, 0)):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, OSError, SyntaxError) as exc:
            raise DataError(f"{path}: not a .npy array file ({str(exc)[:120]})") from None
        if len(shape) != 1 or dtype.kind != "f" or dtype.hasobject:
            raise DataError(f"{path}: expected a 1-D float array, got {dtype} {shape}")
        if shape[0] > MAX_PROTOTYPE_LEN or fh.tell() + shape[0] * dtype.itemsize != size:
            raise DataError(f"{path}: array header does not match the file size")
        arr = np.frombuffer(fh.read(shape[0] * dtype.itemsize), dtype=dtype).copy()
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: non-finite values")
    return arr


def load_shipped(
    root: Path, data: DataSetting, proto_dim: int | None = None, split: str = "train"
) -> Prototypes:
    """Read the reference's shipped prototypes and train prior; values are kept in float64 and
    cast to float32 when handed to the model (as the reference's loader does)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"cider_prototypes directory not found: {root}")
    proto_paths, prior_path = shipped_paths(root, data, split)
    num_classes = len(proto_paths)
    means = np.stack([_load_vector(p).astype(np.float64) for p in proto_paths])
    prior = _load_vector(prior_path).astype(np.float32).astype(np.float64)
    if prior.shape != (num_classes,):
        raise DataError(f"{prior_path}: expected {num_classes} priors, got shape {prior.shape}")
    if abs(prior.sum() - 1.0) > 1e-5:
        raise DataError(f"{prior_path}: priors sum to {prior.sum():.6f}, not 1")
    if proto_dim is not None and means.shape[1] != proto_dim:
        raise DataError(
            f"shipped prototypes have length {means.shape[1]} but the model expects {proto_dim} "
            "(text width + audio + vision dims); use the encoder they were made with"
        )
    return Prototypes(means=means, prior=prior)
