"""Tiny hand-made splits and contexts for the CIDer tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mer_bench.adapters import AdapterContext
from mer_bench.batch import Batch, SplitTensors
from mer_bench.data.types import CLS_ID, SEP_ID, DataSpec, Split
from mer_bench.protocol import Alignment, Dataset, DataSetting, Distribution, Task


def make_split(
    n_samples: int = 24,
    n: int = 12,
    audio_len: int = 20,
    vision_len: int = 16,
    audio_dim: int = 5,
    vision_dim: int = 7,
    aligned: bool = False,
    seed: int = 0,
    vocab: int = 400,
) -> Split:
    """A learnable toy split: the label is carried by one word, the audio mean and the vision
    mean (so each modality helps)."""
    rng = np.random.default_rng(seed)
    if aligned:
        audio_len = vision_len = n
    labels = np.arange(n_samples) % 3
    lengths = rng.integers(5, n + 1, n_samples)
    ids = np.zeros((n_samples, n), np.int64)
    mask = np.zeros((n_samples, n), np.int64)
    for i, length in enumerate(lengths):
        ids[i, 0], ids[i, length - 1] = CLS_ID, SEP_ID
        ids[i, 1 : length - 1] = rng.integers(1000, 1000 + vocab, length - 2)
        ids[i, 1] = 2000 + labels[i]  # label word
        mask[i, :length] = 1
    text_bert = np.stack((ids, mask, np.zeros_like(ids)), axis=1)
    a_len = lengths if aligned else rng.integers(audio_len // 2, audio_len + 1, n_samples)
    v_len = lengths if aligned else rng.integers(vision_len // 2, vision_len + 1, n_samples)
    signal = (labels.astype(np.float32) - 1.0)[:, None, None]
    audio = rng.normal(size=(n_samples, audio_len, audio_dim)).astype(np.float32) + signal
    vision = rng.normal(size=(n_samples, vision_len, vision_dim)).astype(np.float32) - signal
    audio[np.arange(audio_len)[None, :] >= a_len[:, None]] = 0.0
    vision[np.arange(vision_len)[None, :] >= v_len[:, None]] = 0.0
    scores = (labels.astype(np.float32) - 1.0) * 1.5
    return Split(
        name="train",
        sample_ids=np.array([f"v{i}$_$0" for i in range(n_samples)]),
        text_bert=text_bert,
        audio=audio,
        vision=vision,
        audio_lengths=a_len.astype(np.int64),
        vision_lengths=v_len.astype(np.int64),
        class_labels=labels.astype(np.int64),
        regression_labels=scores,
    )


def spec_of(split: Split, aligned: bool, task: Task = Task.BINARY) -> DataSpec:
    return DataSpec.from_split(split, aligned, task)


def make_ctx(
    split: Split,
    aligned: bool = False,
    task: Task = Task.BINARY,
    preset: str = "synth",
    adapter: str = "cider",
    options: dict[str, Any] | None = None,
    dataset: Dataset = Dataset.SYNTH,
    distribution: Distribution = Distribution.IID,
    **overrides: Any,
) -> AdapterContext:
    from mer_bench.adapters import get_adapter

    cls = get_adapter(adapter)
    params = cls.resolve_params(preset, overrides)
    data = DataSetting(
        dataset, distribution, Alignment.ALIGNED if aligned else Alignment.UNALIGNED, task
    )
    return AdapterContext.create(spec_of(split, aligned, task), params, data=data, options=options)


def full_batch(split: Split, task: Task = Task.BINARY) -> Batch:
    data = SplitTensors(split, task)
    return data.batch(torch.arange(split.size))
