"""Reading a results store for reports: a tidy metrics frame and paired per-sample views."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mer_bench.errors import ConfigError, DataError
from mer_bench.metrics import Aggregate, CurveWeights
from mer_bench.protocol import Task, TauSelection
from mer_bench.report.stats import MetricView, metric_view
from mer_bench.store import ResultsStore

PRIMARY = "primary"
"""Pseudo-selection: each row the run marked as its headline (``is_primary``)."""
ORACLE = TauSelection.TEST_ORACLE.value
VALID = TauSelection.VALID.value
AUILC = Aggregate.AUILC.value
NATIVE = "native"


def load_frame(store: ResultsStore) -> pd.DataFrame:
    """Every result row, metrics expanded to one column each, plus ``data_id`` and ``label``."""
    raw = store.results_frame()
    if raw.empty:
        raise DataError(f"the results store {store.path} holds no evaluated cell yet")
    metrics = pd.DataFrame(list(raw["metrics"].map(json.loads)), index=raw.index)
    frame = pd.concat([raw.drop(columns=["metrics"]), metrics], axis=1)
    frame["data_id"] = frame["cell_id"].str.rsplit("/", n=1).str[0]
    frame["label"] = frame["cell_id"].str.rsplit("/", n=1).str[1]
    frame["is_primary"] = frame["is_primary"].astype(bool)
    return with_systems(frame)


def with_systems(frame: pd.DataFrame) -> pd.DataFrame:
    """Name each (model, training regime) as one system: ``mult`` for the native regime,
    ``mult[clean]``, ``mult[matched]``, … otherwise. Reports compare systems; ``base_model`` and
    ``regime`` keep the parts."""
    frame = frame.copy()
    regime = frame["regime"].fillna(NATIVE) if "regime" in frame else NATIVE
    frame["regime"] = regime
    frame["base_model"] = frame["model"]
    native = frame["regime"] == NATIVE
    frame["model"] = frame["model"].where(native, frame["model"] + "[" + frame["regime"] + "]")
    return frame


def select(frame: pd.DataFrame, selection: str = PRIMARY) -> pd.DataFrame:
    """Rows of one selection; models without knobs (selection ``none``) always qualify."""
    if selection == PRIMARY:
        return frame[frame["is_primary"]]
    chosen = frame[(frame["selection"] == selection) | (frame["selection"] == "none")]
    if chosen.empty:
        valid = ", ".join(sorted(set(frame["selection"])))
        raise ConfigError(f"no results with selection {selection!r}; stored: {valid}")
    return chosen


def model_order(frame: pd.DataFrame, models: Sequence[str] | None = None) -> list[str]:
    """Models in run order (first finished first), or as listed; unknown names are an error."""
    present = (
        frame.groupby("model")["finished_at"]
        .min()
        .reset_index()
        .sort_values(["finished_at", "model"])
    )
    order = list(present["model"])
    if not models:
        return order
    unknown = [m for m in models if m not in order]
    if unknown:
        raise ConfigError(
            f"no results for model(s) {', '.join(unknown)}; stored: {', '.join(order)}"
        )
    return list(models)


def oracle_models(frame: pd.DataFrame) -> list[str]:
    """Models whose headline rows use the test-oracle τ (docs/cider.md, Q-3)."""
    rows = frame[frame["is_primary"] & (frame["selection"] == ORACLE)]
    return sorted(set(rows["model"]))


def seed_auilc(
    rows: pd.DataFrame, metric: str, curve: CurveWeights | Aggregate = Aggregate.AUILC
) -> pd.Series:
    """The curve summary (AUILC by default) per seed from the rows of one (model, data setting,
    mode); seeds lacking one of its rates drop."""
    weights = curve.curve if isinstance(curve, Aggregate) else curve
    values = {}
    for seed, part in rows.groupby("seed"):
        by_rate = dict(zip(part["rate"].round(1), part[metric]))
        if all(r in by_rate for r in weights.rates):
            values[seed] = weights.of([by_rate[r] for r in weights.rates])
    return pd.Series(values, dtype=np.float64)


def seed_relative_robustness(rows: pd.DataFrame, metric: str, agg: Aggregate) -> pd.Series:
    """Relative robustness per seed: the curve summary divided by the clean (rate 0) score."""
    area = seed_auilc(rows, metric, agg)
    clean = seed_auilc(rows, metric, CurveWeights((0.0,), (1.0,)))
    return (area / clean).dropna()


@dataclass
class Predictions:
    """Cached per-sample views: one (S, N) :class:`MetricView` per (model, cell, selection)."""

    store: ResultsStore
    _cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def _load(self, setting_id: str, cell_id: str, selection: str) -> tuple[np.ndarray, np.ndarray]:
        key = (setting_id, cell_id + "\0" + selection)
        if key not in self._cache:
            got = self.store.predictions(setting_id, cell_id, selection)
            if got is None:
                raise DataError(f"no stored predictions for {setting_id} {cell_id} ({selection})")
            index, labels, scores = got
            order = np.argsort(index, kind="stable")
            self._cache[key] = (labels[order], scores[order])
        return self._cache[key]

    def view(self, rows: pd.DataFrame, task: Task, metric: str) -> MetricView:
        """Stack the rows' seeds (sorted) into one view; all seeds must share the test split."""
        rows = rows.sort_values("seed")
        loaded = [self._load(r.setting_id, r.cell_id, r.selection) for r in rows.itertuples()]
        sizes = {lab.shape[0] for lab, _ in loaded}
        if len(sizes) != 1:
            raise DataError(f"seeds of {rows['cell_id'].iloc[0]} hold different test split sizes")
        labels = np.stack([lab for lab, _ in loaded])
        scores = np.stack([s for _, s in loaded])
        return metric_view(task, metric, labels, scores)
