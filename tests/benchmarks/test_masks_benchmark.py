"""Mask generation speed for a MOSEI-sized test split (per-sample rng, ``split_keep_masks``).

Each benchmark is one whole sweep: the 11 rates of a rate mode, or SMM's 7 conditions; divide
by the sweep length (``extra_info``) for the time per rate. Run with ``pytest tests/benchmarks
--benchmark-enable``; under the default ``--benchmark-disable`` each test runs once, on rates
0, 0.5 and 1 only, as a quick check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from mer_bench.batch import KeepMasks
from mer_bench.missing import split_keep_masks
from mer_bench.protocol import CONDITIONS, RATES, Mode

N_TEST = 4659  # MOSEI test split
TEXT_LEN = 50
AV_LEN = 500


@dataclass(frozen=True)
class Shape:
    text_mask: np.ndarray
    audio_lengths: np.ndarray
    vision_lengths: np.ndarray
    audio_len: int
    vision_len: int

    def masks(self, mode: Mode, rate: float | None, condition: str | None) -> KeepMasks:
        return split_keep_masks(
            mode,
            rate=rate,
            condition=condition,
            seed=1111,
            text_mask=self.text_mask,
            audio_lengths=self.audio_lengths,
            vision_lengths=self.vision_lengths,
            audio_len=self.audio_len,
            vision_len=self.vision_len,
        )

    def sweep(self, mode: Mode, rates: tuple[float, ...]) -> list[KeepMasks]:
        if mode is Mode.SMM:
            return [self.masks(mode, None, c) for c in CONDITIONS]
        return [self.masks(mode, r, None) for r in rates]


def _rates(benchmark) -> tuple[float, ...]:
    # Under --benchmark-disable (the default suite) this is a smoke test: 0, 0.5, 1 suffice.
    return RATES if benchmark.enabled else RATES[::5]


def _shape(aligned: bool) -> Shape:
    rs = np.random.RandomState(2024)
    text_len = rs.randint(2, TEXT_LEN + 1, size=N_TEST)
    text_mask = (np.arange(TEXT_LEN)[None, :] < text_len[:, None]).astype(np.int64)
    if aligned:
        return Shape(text_mask, text_len, text_len.copy(), TEXT_LEN, TEXT_LEN)
    return Shape(
        text_mask,
        rs.randint(1, AV_LEN + 1, size=N_TEST),
        rs.randint(1, AV_LEN + 1, size=N_TEST),
        AV_LEN,
        AV_LEN,
    )


@pytest.fixture(scope="module")
def unaligned() -> Shape:
    return _shape(aligned=False)


@pytest.fixture(scope="module")
def aligned() -> Shape:
    return _shape(aligned=True)


def _check_sweep(shape: Shape, mode: Mode, sweep: list[KeepMasks]) -> None:
    text_valid = int(shape.text_mask.sum())
    audio_valid = int(shape.audio_lengths.sum())
    if mode is Mode.SMM:
        # conditions T, A, V, TA, TV, AV, TAV: audio kept whole exactly when A is listed
        kept = [int(k.audio.sum()) for k in sweep]
        assert kept == [audio_valid if "A" in c else 0 for c in CONDITIONS]
        return
    first, last = sweep[0], sweep[-1]
    assert int(first.text.sum()) == text_valid and int(first.audio.sum()) == audio_valid
    assert int(last.text.sum()) == 2 * N_TEST  # only [CLS]/[SEP] left at rate 1
    kept = [int(k.audio.sum()) for k in sweep]
    assert kept == sorted(kept, reverse=True) and kept[len(kept) // 2] < kept[0]


@pytest.mark.parametrize("mode", [Mode.RMFM, Mode.RMFM_SAME, Mode.RMM, Mode.SMM])
def test_unaligned_sweep(benchmark, unaligned: Shape, mode: Mode) -> None:
    rates = _rates(benchmark)
    benchmark.extra_info["sweep_length"] = len(CONDITIONS) if mode is Mode.SMM else len(rates)
    sweep = benchmark.pedantic(unaligned.sweep, args=(mode, rates), rounds=3, warmup_rounds=1)
    _check_sweep(unaligned, mode, sweep)


@pytest.mark.parametrize("mode", [Mode.TMFM, Mode.STMFM])
def test_aligned_sweep(benchmark, aligned: Shape, mode: Mode) -> None:
    rates = _rates(benchmark)
    benchmark.extra_info["sweep_length"] = len(rates)
    sweep = benchmark.pedantic(aligned.sweep, args=(mode, rates), rounds=3, warmup_rounds=1)
    _check_sweep(aligned, mode, sweep)
