"""Bias-word dictionary and counterfactual text (docs/cider.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mer_bench.data.types import MASK_ID, SPECIAL_IDS
from mer_bench.errors import DataError
from mer_bench.protocol import DataSetting

CV_THRESHOLD = 0.1


@dataclass(frozen=True)
class BiasWords:
    """The top-K skewed words of the training split, in dictionary (descending count) order."""

    ids: np.ndarray
    """(K',) int64 token ids, K' ≤ K."""
    counts: np.ndarray
    """(K',) int64 total occurrences in the training split."""
    cv: np.ndarray
    """(K',) float32 coefficient of variation of the class counts."""


def build_bias_words(
    ids: np.ndarray, labels: np.ndarray, num_classes: int, top_k: int = 100
) -> BiasWords:
    """Exactly as the reference: per-occurrence class counts of non-special ids, float32 cv, cv ≥ 0.1,
    top-K by total count with a stable sort (ties keep first-occurrence order).

    ids (N, n) token ids in stored order; labels (N,) task labels in 0..C−1. For the 3-class
    ("binary") task the cv uses the negative and positive counts only and a word seen only in
    neutral samples reuses the previous word's cv (Q-9, reproduced).
    """
    ids = np.asarray(ids).astype(np.int64)
    labels = np.asarray(labels).astype(np.int64)
    flat = ids.reshape(-1)
    flat_labels = np.repeat(labels, ids.shape[1])
    keep = ~np.isin(flat, np.fromiter(SPECIAL_IDS, dtype=np.int64))
    flat, flat_labels = flat[keep], flat_labels[keep]
    if flat.size == 0:
        return BiasWords(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    # Dictionary insertion order = order of first occurrence in the row-major scan.
    uniq, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    words = uniq[order]
    counts = np.zeros((words.size, num_classes), dtype=np.int64)
    np.add.at(counts, (rank[inverse], flat_labels), 1)
    totals = counts.sum(axis=1)

    if num_classes == 3:
        pair = counts[:, [0, 2]].astype(np.float32)
        has_signal = pair.sum(axis=1) > 0
        cv = np.full(words.size, np.nan, dtype=np.float32)
        cv[has_signal] = (pair[has_signal].std(axis=1) / pair[has_signal].mean(axis=1)).astype(
            np.float32
        )
        # neutral-only words keep the cv computed for the previous word in insertion order
        # (the reference never recomputes it). A leading neutral-only word has no previous cv
        # (the reference would crash); it stays NaN and is never kept.
        last = np.where(has_signal, np.arange(words.size), -1)
        np.maximum.accumulate(last, out=last)
        cv = np.where(last >= 0, cv[np.clip(last, 0, None)], np.float32(np.nan)).astype(np.float32)
    else:
        counts32 = counts.astype(np.float32)
        cv = (counts32.std(axis=1) / counts32.mean(axis=1)).astype(np.float32)

    # float32 cv against the double 0.1: float32(0.1) itself passes (its double value > 0.1).
    passed = cv.astype(np.float64) >= CV_THRESHOLD
    kept = np.flatnonzero(passed)
    ranked = kept[np.argsort(-totals[kept], kind="stable")][:top_k]
    return BiasWords(words[ranked], totals[ranked], cv[ranked])


def bias_cache_path(cache_dir: Path, data: DataSetting, top_k: int) -> Path:
    """Cache file keyed by the whole data setting and K (the reference's key omits the
    alignment and lives in the working directory, Q-10)."""
    return Path(cache_dir) / f"cider_bias_{data.id.replace('/', '_')}_{top_k}.npz"


def load_or_build(
    path: Path | None, ids: np.ndarray, labels: np.ndarray, num_classes: int, top_k: int
) -> BiasWords:
    """Read the cached dictionary at ``path`` or build it (and write it there)."""
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return BiasWords(
                    z["ids"].astype(np.int64),
                    z["counts"].astype(np.int64),
                    z["cv"].astype(np.float32),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"corrupt CIDer bias-word cache {path}: {exc}") from None
    words = build_bias_words(ids, labels, num_classes, top_k)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, ids=words.ids, counts=words.counts, cv=words.cv)
        tmp.replace(path)
    return words


def keep_table(bias_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(vocab_size,) bool: True for special ids and bias words (kept in counterfactual text)."""
    table = torch.zeros(vocab_size, dtype=torch.bool, device=bias_ids.device)
    table[torch.tensor(sorted(SPECIAL_IDS), device=bias_ids.device)] = True
    table[bias_ids.long()] = True
    return table


def counterfactual_ids(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Keep special ids (incl. [UNK] from missingness, padding) and bias words, every
    other id → [MASK] (103). ids (B, n) of the missing view."""
    safe = ids.clamp(0, table.numel() - 1)
    return torch.where(table[safe], ids, torch.full_like(ids, MASK_ID))
