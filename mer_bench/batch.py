"""The batch type models receive, and how missing-data keep-masks are applied to it.

A ``Batch`` always carries the *original* validity masks and lengths (padding is known to every
model). ``keep`` is ``None`` for the complete view; after ``with_missing`` it holds the
keep-masks (1 = valid and kept) and the features show the missing view:

- dropped text tokens become [UNK] (id 100), padding stays [PAD];
- dropped precomputed text feature vectors and dropped audio/vision frames become zeros.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from mer_bench.data.types import UNK_ID, Split
from mer_bench.protocol import Task


@dataclass(frozen=True)
class KeepMasks:
    """Per-position keep-masks, 1 = valid and kept, 0 = dropped or padding. Bool tensors."""

    text: torch.Tensor
    """(B, n)"""
    audio: torch.Tensor
    """(B, L_a)"""
    vision: torch.Tensor
    """(B, L_v)"""

    def to(self, device: torch.device | str, non_blocking: bool = False) -> KeepMasks:
        return KeepMasks(
            *(t.to(device, non_blocking=non_blocking) for t in (self.text, self.audio, self.vision))
        )


@dataclass(frozen=True)
class Batch:
    """A mini-batch of one split, as torch tensors (batch-major)."""

    index: torch.Tensor
    """(B,) int64: row index of each sample in its split (keys masks, Self-MM's memory)."""
    text_ids: torch.Tensor
    """(B, n) int64 token ids of this view."""
    text_mask: torch.Tensor
    """(B, n) int64 original attention mask."""
    text_segments: torch.Tensor
    """(B, n) int64 segment ids."""
    audio: torch.Tensor
    """(B, L_a, D_a) float32 features of this view."""
    vision: torch.Tensor
    """(B, L_v, D_v) float32."""
    audio_mask: torch.Tensor
    """(B, L_a) int64 original validity mask (first ``length`` frames)."""
    vision_mask: torch.Tensor
    audio_lengths: torch.Tensor
    """(B,) int64."""
    vision_lengths: torch.Tensor
    label: torch.Tensor
    """(B,) task label: int64 class ids, or float32 scores for regression."""
    score: torch.Tensor
    """(B,) float32 regression label, always present (multi-task models use it)."""
    text_feats: torch.Tensor | None = None
    """(B, n, D_t) float32 precomputed text features of this view, if the data has them."""
    keep: KeepMasks | None = None
    """Keep-masks of this view; None for the complete view."""
    complete: Batch | None = None
    """The complete view this one was derived from (set by ``with_missing``); None when this
    batch is itself complete."""

    @property
    def size(self) -> int:
        return int(self.index.shape[0])

    @property
    def text_lengths(self) -> torch.Tensor:
        return self.text_mask.sum(dim=1)

    @property
    def complete_view(self) -> Batch:
        """The uncorrupted batch: reconstruction targets of restoration objectives come from it."""
        return self if self.complete is None else self.complete

    @property
    def text_bert(self) -> torch.Tensor:
        """(B, 3, n) int64 ids / mask / segments, the layout of MMSA's ``text_bert``."""
        return torch.stack((self.text_ids, self.text_mask, self.text_segments), dim=1)

    def with_missing(self, keep: KeepMasks) -> Batch:
        """The missing view of this (complete) batch under ``keep``.

        keep must already exclude padding (it is produced by ``mer_bench.missing``).
        """
        if self.keep is not None:
            raise ValueError("with_missing expects the complete view")
        kt = keep.text.to(self.text_ids.dtype)
        ids = kt * self.text_ids + UNK_ID * (self.text_mask - kt)
        feats = None
        if self.text_feats is not None:
            feats = self.text_feats * keep.text.unsqueeze(-1).to(self.text_feats.dtype)
        return replace(
            self,
            text_ids=ids,
            text_feats=feats,
            audio=self.audio * keep.audio.unsqueeze(-1).to(self.audio.dtype),
            vision=self.vision * keep.vision.unsqueeze(-1).to(self.vision.dtype),
            keep=keep,
            complete=self,
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                value = value.to(device, non_blocking=non_blocking)
            moved[f.name] = value
        return Batch(**moved)

    def pin_memory(self) -> Batch:
        pinned = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (torch.Tensor, Batch)):
                value = value.pin_memory()
            elif isinstance(value, KeepMasks):
                value = KeepMasks(
                    value.text.pin_memory(), value.audio.pin_memory(), value.vision.pin_memory()
                )
            pinned[f.name] = value
        return Batch(**pinned)


def validity_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, max_len) int64 mask with the first ``length`` positions set."""
    steps = torch.arange(max_len, device=lengths.device)
    return (steps.unsqueeze(0) < lengths.unsqueeze(1)).to(torch.int64)


class SplitTensors:
    """A split viewed as torch tensors without copying (``torch.from_numpy``); batches index it."""

    def __init__(self, split: Split, task: Task) -> None:
        self.split = split
        self.task = task
        self.size = split.size
        self._text_bert = torch.from_numpy(np.ascontiguousarray(split.text_bert))
        self._audio = torch.from_numpy(split.audio)
        self._vision = torch.from_numpy(split.vision)
        self._audio_len = torch.from_numpy(split.audio_lengths)
        self._vision_len = torch.from_numpy(split.vision_lengths)
        labels = split.labels(task)
        self._label = torch.from_numpy(
            labels.astype(np.float32) if task is Task.REGRESSION else labels.astype(np.int64)
        )
        self._score = torch.from_numpy(split.regression_labels.astype(np.float32))
        self._text_feats = (
            torch.from_numpy(split.text_feats) if split.text_feats is not None else None
        )

    def batch(self, index: torch.Tensor | np.ndarray) -> Batch:
        """The complete view of the samples at ``index`` (int64 positions in the split)."""
        idx = torch.as_tensor(index, dtype=torch.int64)
        tb = self._text_bert[idx]
        audio_len = self._audio_len[idx]
        vision_len = self._vision_len[idx]
        return Batch(
            index=idx,
            text_ids=tb[:, 0],
            text_mask=tb[:, 1],
            text_segments=tb[:, 2],
            audio=self._audio[idx],
            vision=self._vision[idx],
            audio_mask=validity_mask(audio_len, self._audio.shape[1]),
            vision_mask=validity_mask(vision_len, self._vision.shape[1]),
            audio_lengths=audio_len,
            vision_lengths=vision_len,
            label=self._label[idx],
            score=self._score[idx],
            text_feats=self._text_feats[idx] if self._text_feats is not None else None,
        )

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = False
    ) -> Iterator[Batch]:
        """Batches in split order, or shuffled with ``generator``; the last may be smaller."""
        order = (
            torch.randperm(self.size, generator=generator) if shuffle else torch.arange(self.size)
        )
        for start in range(0, self.size, batch_size):
            yield self.batch(order[start : start + batch_size])
