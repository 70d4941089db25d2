"""Tiny results stores with known answers, written through ResultsStore.record_cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mer_bench.metrics import compute_metrics
from mer_bench.protocol import (
    CONDITIONS,
    RATES,
    Alignment,
    Cell,
    Dataset,
    DataSetting,
    Distribution,
    Mode,
    Task,
    TrainingSetting,
)
from mer_bench.store import CellRow, ResultsStore
from tests.store_helpers import record

DATA = DataSetting(Dataset.SYNTH, Distribution.IID, Alignment.ALIGNED, Task.BINARY)
SEEDS = (1111, 1112, 1113)
N = 60


def labels() -> np.ndarray:
    return np.arange(N) % 3  # 20 neg, 20 neu, 20 pos


def one_hot_scores(pred: np.ndarray) -> np.ndarray:
    scores = np.full((pred.size, 3), 0.1, dtype=np.float32)
    scores[np.arange(pred.size), pred] = 0.8
    return scores


def predictions(model: str, seed: int, level: float) -> np.ndarray:
    """Class predictions: ``base``/``same`` right where u ≥ level + 0.25, ``good`` right on a
    strict superset of those samples (every (seed, sample) pair that base gets right, and more).
    """
    y = labels()
    u = np.random.default_rng(seed).random(N)
    wrong = (y + 1) % 3
    threshold = min(1.0, level + 0.25)
    if model == "good":
        threshold = level  # right on strictly more pairs than base
    return np.where(u >= threshold, y, wrong)


def _row(selection: str, primary: bool, pred: np.ndarray) -> CellRow:
    y = labels()
    scores = one_hot_scores(pred)
    return CellRow(
        selection=selection,
        is_primary=primary,
        metrics=compute_metrics(Task.BINARY, scores, y),
        knobs={"tau": 0.5} if selection != "none" else {},
        per_metric_knobs={},
        labels=y.astype(np.float64),
        scores=scores,
        sample_index=np.arange(N)[::-1].copy(),  # stored out of order on purpose
    )


def _cells() -> list[tuple[Cell, float]]:
    cells = [(Cell(DATA, Mode.RMFM, r), 0.05 + 0.5 * r) for r in RATES]
    cells += [(Cell(DATA, Mode.SMM, None, c), 0.3 - 0.04 * len(c)) for c in CONDITIONS]
    return cells


def _reverse_rows(rows: list[CellRow]) -> list[CellRow]:
    out = []
    for r in rows:
        order = r.sample_index
        out.append(
            CellRow(
                r.selection,
                r.is_primary,
                r.metrics,
                r.knobs,
                r.per_metric_knobs,
                r.labels[order],
                r.scores[order],
                r.sample_index,
            )
        )
    return out


def write_store(
    folder: Path,
    models: tuple[str, ...] = ("base", "good", "same"),
    seeds: tuple[int, ...] = SEEDS,
    oracle_model: str | None = None,
    oracle_primary: bool = False,
    data_fingerprint: str | None = None,
) -> Path:
    """Models ``base``, ``good`` (strictly better), ``same`` (identical to base) and optionally
    a knob model with ``valid``/``default``/``test-oracle`` rows (oracle = good's predictions)."""
    with ResultsStore(folder) as store:
        for model in [*models, *([oracle_model] if oracle_model else [])]:
            for seed in seeds:
                setting = TrainingSetting(model, DATA, seed)
                for cell, level in _cells():
                    if model == oracle_model:
                        rows = [
                            _row("valid", not oracle_primary, predictions("base", seed, level)),
                            _row("default", False, predictions("base", seed, level)),
                            _row("test-oracle", oracle_primary, predictions("good", seed, level)),
                        ]
                    else:
                        kind = "base" if model == "same" else model
                        rows = [_row("none", True, predictions(kind, seed, level))]
                    record(
                        store,
                        setting,
                        cell,
                        _reverse_rows(rows),
                        versions={"mer_bench": "0.1.0", "protocol": "1.0"},
                        git_hash="abc123",
                        data_fingerprint=data_fingerprint,
                    )
    return folder
