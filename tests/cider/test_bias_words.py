"""Bias-word dictionary (docs/cider.md, Q-9, Q-10) and counterfactual text."""

from __future__ import annotations

import numpy as np
import torch

from cider.bias_words import (
    bias_cache_path,
    build_bias_words,
    counterfactual_ids,
    keep_table,
    load_or_build,
)
from mer_bench.protocol import DataSetting


def _rows(*sentences: list[int], n: int = 8) -> np.ndarray:
    out = np.zeros((len(sentences), n), np.int64)
    for i, s in enumerate(sentences):
        out[i, : len(s) + 2] = [101, *s, 102]
    return out


def test_seven_class_cv_threshold_and_stable_top_k() -> None:
    # Word 500: 4× in class 0 only (cv = sqrt(6) > 0.1). Word 501: once in every class (cv 0).
    # Words 502 and 503: twice each in class 3 (ties, insertion order 503 first).
    sentences = [[500, 500, 503], [500, 500, 502], [503, 502]] + [[501]] * 7
    labels = np.array([0, 0, 3, 0, 1, 2, 3, 4, 5, 6])
    ids = _rows(*sentences)
    words = build_bias_words(ids, labels, num_classes=7, top_k=100)
    assert words.ids.tolist() == [500, 503, 502]
    assert words.counts.tolist() == [4, 2, 2]
    assert words.cv.dtype == np.float32
    top1 = build_bias_words(ids, labels, num_classes=7, top_k=1)
    assert top1.ids.tolist() == [500]


def test_binary_cv_ignores_neutral_and_stale_cv_q9() -> None:
    # 600: 11 negative vs 9 positive → cv = 2/20 = 0.1 exactly in float32: passes (float32(0.1)
    # > 0.1). 601: neutral only → reuses 600's cv (passes). 602: 5 neg / 5 pos → cv 0 (fails).
    # 603: neutral only, right after 602 → stale cv 0 (fails), although it is pure "neutral".
    sentences, labels = [], []
    for _ in range(11):
        sentences.append([600])
        labels.append(0)
    for _ in range(9):
        sentences.append([600])
        labels.append(2)
    sentences.append([601, 601, 601])
    labels.append(1)
    for lab in (0, 2) * 5:
        sentences.append([602])
        labels.append(lab)
    sentences.append([603] * 5)
    labels.append(1)
    words = build_bias_words(_rows(*sentences), np.array(labels), num_classes=3)
    assert words.ids.tolist() == [600, 601]
    assert np.float32(words.cv[0]) == np.float32(0.1)
    assert words.cv[1] == words.cv[0]


def test_specials_and_padding_are_not_words() -> None:
    ids = _rows([100, 103, 700], [700])
    words = build_bias_words(ids, np.array([0, 0]), num_classes=3)
    assert words.ids.tolist() == [700]
    assert words.counts.tolist() == [2]


def test_counterfactual_keeps_specials_and_bias_words() -> None:
    table = keep_table(torch.tensor([500, 42]), vocab_size=1000)
    ids = torch.tensor([[101, 500, 7, 100, 42, 102, 0, 0], [101, 999, 500, 102, 0, 0, 0, 0]])
    cf = counterfactual_ids(ids, table)
    assert cf.tolist() == [[101, 500, 103, 100, 42, 102, 0, 0], [101, 103, 500, 102, 0, 0, 0, 0]]


def test_cache_key_and_reuse(tmp_path) -> None:
    path = bias_cache_path(tmp_path, DataSetting.parse("mosi/ood/unaligned/binary"), 100)
    assert path.name == "cider_bias_mosi_ood_unaligned_binary_100.npz"
    assert path.name == "cider_bias_mosi_ood_unaligned_binary_100.npz"
    assert path != bias_cache_path(tmp_path, DataSetting.parse("mosi/ood/aligned/binary"), 100)
    ids = _rows([500, 501], [500])
    first = load_or_build(path, ids, np.array([0, 0]), 3, 100)
    assert path.is_file()
    # The cached dictionary is returned as-is (different inputs are not re-read).
    again = load_or_build(path, _rows([9]), np.array([2]), 3, 100)
    assert again.ids.tolist() == first.ids.tolist() == [500, 501]
