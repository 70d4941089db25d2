"""``export``: results and per-sample predictions as flat tables with stable columns
(docs/architecture.md, Exports)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mer_bench.errors import ConfigError
from mer_bench.protocol import TASK_INFO, Cell
from mer_bench.store import ResultsStore

KEY_COLUMNS = (
    "model",
    "dataset",
    "distribution",
    "alignment",
    "task",
    "seed",
    "regime",
    "mode",
    "rate",
    "condition",
    "cell",
)
METRIC_COLUMNS = (
    "has0_acc2",
    "has0_f1",
    "non0_acc2",
    "non0_f1",
    "acc3",
    "f1_3",
    "acc5",
    "acc7",
    "f1_7",
    "mae",
    "corr",
)


def _present_metrics(frame: pd.DataFrame) -> list[str]:
    tasks = set(frame["task"]) if len(frame) else set()
    used = {m for t, info in TASK_INFO.items() if t.value in tasks for m in info.metrics}
    return [m for m in METRIC_COLUMNS if m in used]


def metrics_frame(store: ResultsStore) -> pd.DataFrame:
    """One row per (setting, cell, selection); metric columns for the tasks present."""
    raw = store.results_frame()
    if raw.empty:
        return pd.DataFrame(columns=[*KEY_COLUMNS, "tau", "tau_selection"])
    metrics = raw["metrics"].map(json.loads)
    knobs = raw["knobs"].map(json.loads)
    frame = raw.rename(columns={"cell_id": "cell"})[list(KEY_COLUMNS)].copy()
    frame["rate"] = frame["rate"].astype(float)
    frame["cell"] = raw["cell_id"]
    for name in _present_metrics(raw):
        frame[name] = metrics.map(lambda m, n=name: m.get(n, np.nan))
    frame["tau"] = knobs.map(lambda k: k.get("tau", np.nan))
    frame["tau_selection"] = raw["selection"]
    return frame


def predictions_frame(store: ResultsStore) -> pd.DataFrame:
    """One row per (setting, cell, selection, sample) with labels and scores."""
    raw = store.results_frame()
    parts = []
    for row in raw.itertuples(index=False):
        pred = store.predictions(row.setting_id, row.cell_id, row.selection)
        if pred is None:
            continue
        index, labels, scores = pred
        ids = store.sample_ids(Cell.parse(row.cell_id).data.id, "test")
        part = pd.DataFrame(
            {k: getattr(row, k if k != "cell" else "cell_id") for k in KEY_COLUMNS},
            index=range(len(index)),
        )
        part["tau"] = json.loads(row.knobs).get("tau", np.nan)
        part["tau_selection"] = row.selection
        part["sample_id"] = [ids[i] for i in index] if ids is not None else index
        part["label"] = labels
        if scores.ndim == 2:
            for k in range(scores.shape[1]):
                part[f"score_{k}"] = scores[:, k]
        else:
            part["score"] = scores
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=[*KEY_COLUMNS, "tau", "tau_selection", "sample_id", "label"])
    frame = pd.concat(parts, ignore_index=True)
    score_cols = sorted(
        (c for c in frame.columns if c.startswith("score_")), key=lambda c: int(c[6:])
    )
    rest = [c for c in frame.columns if c not in score_cols and c != "score"]
    return frame[rest + score_cols + (["score"] if "score" in frame.columns else [])]


def write_frame(frame: pd.DataFrame, fmt: str, out: Path | None) -> str | None:
    """Write csv/parquet to ``out``; csv to the returned string when ``out`` is None."""
    if fmt == "csv":
        if out is None:
            return frame.to_csv(index=False)
        frame.to_csv(out, index=False)
        return None
    if fmt == "parquet":
        if out is None:
            raise ConfigError("--format parquet needs --out FILE")
        try:
            frame.to_parquet(out, index=False)
        except ImportError:
            raise ConfigError("--format parquet needs pyarrow: pip install pyarrow") from None
        return None
    raise ConfigError(f"invalid format {fmt!r}; valid: csv, parquet")
