"""In-memory form of a loaded data setting: one copy of each split's arrays, plus its spec.

Loaders (``mer_bench.data.loaders``) turn validated MMSA files into these objects; the same
objects come out for real and synthetic data. Masks are applied per batch (``mer_bench.batch``),
never as masked copies of a split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mer_bench.protocol import DataSetting, Task

UNK_ID = 100
PAD_ID = 0
CLS_ID = 101
SEP_ID = 102
MASK_ID = 103
SPECIAL_IDS: frozenset[int] = frozenset({PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID})


@dataclass(frozen=True)
class DataSpec:
    """Shapes a model is built for (taken from the loaded training files)."""

    text_len: int
    """n: text length in tokens (50 for MOSI/MOSEI, 44/75 cross-dataset)."""
    audio_len: int
    vision_len: int
    audio_dim: int
    vision_dim: int
    text_feat_dim: int | None
    """Width of the precomputed ``text`` features (768 for real files), None if absent."""
    aligned: bool
    task: Task

    @property
    def num_classes(self) -> int | None:
        return self.task.info.num_classes

    @classmethod
    def from_split(cls, split: Split, aligned: bool, task: Task) -> DataSpec:
        """The shapes of a (training) split."""
        return cls(
            text_len=split.text_bert.shape[2],
            audio_len=split.audio.shape[1],
            vision_len=split.vision.shape[1],
            audio_dim=split.audio.shape[2],
            vision_dim=split.vision.shape[2],
            text_feat_dim=None if split.text_feats is None else split.text_feats.shape[2],
            aligned=aligned,
            task=task,
        )


@dataclass
class Split:
    """One split (train, valid or test) of a data setting, validated and cast.

    All arrays share the leading sample axis N; sample ``i`` is addressed by its index in the
    split (``index``), which is also what keys its missing-data masks.
    """

    name: str
    sample_ids: np.ndarray
    """(N,) str: ``video$_$clip`` ids from the file."""
    text_bert: np.ndarray
    """(N, 3, n) int64: token ids / attention mask / segment ids."""
    audio: np.ndarray
    """(N, L_a, D_a) float32, -inf replaced by 0."""
    vision: np.ndarray
    """(N, L_v, D_v) float32."""
    audio_lengths: np.ndarray
    """(N,) int64 valid frames (text lengths for aligned files)."""
    vision_lengths: np.ndarray
    class_labels: np.ndarray
    """(N,) int64 in {0,1,2}: negative / neutral / positive."""
    regression_labels: np.ndarray
    """(N,) float32 in [-3, 3]."""
    text_feats: np.ndarray | None = None
    """(N, n, D_t) float32 precomputed text features (``text`` key), if the file has them."""
    raw_text: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.text_bert.shape[0])

    @property
    def text_ids(self) -> np.ndarray:
        return self.text_bert[:, 0]

    @property
    def text_mask(self) -> np.ndarray:
        return self.text_bert[:, 1]

    @property
    def text_lengths(self) -> np.ndarray:
        return self.text_bert[:, 1].sum(axis=1).astype(np.int64)

    def labels(self, task: Task) -> np.ndarray:
        """Task labels: class ids for binary/seven (seven rounds half to even), scores otherwise."""
        if task is Task.BINARY:
            return self.class_labels
        if task is Task.SEVEN:
            return seven_class_labels(self.regression_labels)
        return self.regression_labels


def seven_class_labels(scores: np.ndarray) -> np.ndarray:
    """round(clip(score, -3, 3)) + 3 with NumPy's round-half-to-even (docs/cider.md, Q-21)."""
    return (np.round(np.clip(scores.astype(np.float64), -3.0, 3.0)) + 3).astype(np.int64)


def sign_class_labels(scores: np.ndarray) -> np.ndarray:
    """Three-way labels from the sign of the score: <0 → 0, =0 → 1, >0 → 2 (cross-dataset)."""
    return (np.sign(scores.astype(np.float64)) + 1).astype(np.int64)


@dataclass(frozen=True)
class DataFile:
    """One data file a setting reads, identified by its content."""

    role: str
    """Which splits it gives: ``train/valid/test`` (one file holds all three), ``train/valid``
    or ``test`` (cross-dataset reads two files)."""
    name: str
    """The file's base name only: a full path would leak where a user keeps their data."""
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "file": self.name, "sha256": self.sha256}


def data_fingerprint(files: Sequence[DataFile]) -> str:
    """A short digest naming the exact data a setting read: over (role, name, SHA-256) of
    each file, so re-extracted or regenerated files give another fingerprint."""
    rows = sorted([f.role, f.name, f.sha256] for f in files)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


@dataclass
class DatasetBundle:
    """A loaded data setting: train/valid/test splits and the spec models are built for."""

    setting: DataSetting
    train: Split
    valid: Split
    test: Split
    spec: DataSpec
    sources: dict[str, Path] = field(default_factory=dict)
    """Which file each split came from."""
    files: tuple[DataFile, ...] = ()
    """The files read, with their SHA-256 (from the import cache, not hashed again)."""

    @property
    def fingerprint(self) -> str:
        """The data fingerprint of this bundle (``data_fingerprint`` over ``files``)."""
        return data_fingerprint(self.files)

    def split(self, name: str) -> Split:
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]
