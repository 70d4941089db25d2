"""Writing cells into a results store in tests, with the bookkeeping fields filled in."""

from __future__ import annotations

from typing import Any

from mer_bench.protocol import Cell, TrainingSetting
from mer_bench.store import CellRow, ResultsStore

RECORD_DEFAULTS: dict[str, Any] = {
    "mask_rng": "per-sample",
    "wall_seconds": 0.0,
    "device": "cpu",
    "versions": {},
    "git_hash": "x",
    "config_hash": "h",
}


def record(
    store: ResultsStore, setting: TrainingSetting, cell: Cell, rows: list[CellRow], **fields: Any
) -> bool:
    """``store.record_cell`` with test defaults for every field not given."""
    return store.record_cell(setting, cell, rows, **{**RECORD_DEFAULTS, **fields})
