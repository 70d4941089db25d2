from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from mer_bench.protocol import (
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


def _row(seed: int, selection: str = "none", primary: bool = True) -> CellRow:
    rng = np.random.default_rng(seed)
    scores = rng.random((5, 3)).astype(np.float32)
    return CellRow(
        selection=selection,
        is_primary=primary,
        metrics={"acc3": float(rng.random())},
        knobs={},
        per_metric_knobs={},
        labels=rng.integers(0, 3, 5).astype(np.float64),
        scores=scores,
        sample_index=np.arange(5),
    )


def _write_cells(folder: str, model: str, modes: list[str]) -> None:
    with ResultsStore(folder) as store:
        setting = TrainingSetting(model, DATA, 1111)
        for mode in modes:
            for rate in RATES:
                cell = Cell(DATA, Mode(mode), rate)
                record(
                    store,
                    setting,
                    cell,
                    [_row(int(rate * 10))],
                )


def test_cell_round_trip_and_no_duplicates(tmp_path: Path) -> None:
    setting = TrainingSetting("m", DATA, 1111)
    cell = Cell(DATA, Mode.RMM, 0.3)
    row = _row(0)
    with ResultsStore(tmp_path) as store:
        kw = dict(
            mask_rng="per-sample",
            wall_seconds=1.0,
            device="cpu",
            versions={"a": "1"},
            git_hash="abc",
            config_hash="h",
        )
        assert store.record_cell(setting, cell, [row], **kw)
        assert not store.record_cell(setting, cell, [row], **kw)  # already done: nothing written
        assert store.done_cells(setting) == {cell.id}
        index, labels, scores = store.predictions(setting.id, cell.id, "none")
        np.testing.assert_array_equal(scores, row.scores)
        np.testing.assert_array_equal(labels, row.labels)
        np.testing.assert_array_equal(index, np.arange(5))
        assert store.count_cells() == 1


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    setting = TrainingSetting("m", DATA, 1111)
    cell = Cell(DATA, Mode.RMM, 0.3)
    with ResultsStore(tmp_path) as store:
        bad = _row(0)
        object.__setattr__(bad, "sample_index", "x")  # fails while inserting predictions
        with pytest.raises(ValueError):
            record(
                store,
                setting,
                cell,
                [_row(1, "valid"), bad],
            )
        assert store.done_cells(setting) == set()


def test_two_processes_writing_concurrently_lose_no_rows(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_write_cells, args=(str(tmp_path), model, ["RMFM", "RMM", "RMFM_same"]))
        for model in ("a", "b")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with ResultsStore(tmp_path) as store:
        assert store.count_cells() == 2 * 3 * len(RATES)
        frame = store.results_frame()
        assert len(frame) == 2 * 3 * len(RATES)
        assert not frame.duplicated(["setting_id", "cell_id", "selection"]).any()


def test_a_store_written_before_the_regime_axis_reads_as_native(tmp_path) -> None:
    """Stores from before the training-regime axis gain the columns, every row ``native``."""
    import sqlite3

    from mer_bench.export import metrics_frame
    from mer_bench.store import ResultsStore

    with ResultsStore(tmp_path) as store:
        pass
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:  # back to the old layout
        for table in ("settings", "results"):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN train_rate")
            conn.execute(f"ALTER TABLE {table} DROP COLUMN regime")
        assert "regime" not in {r[1] for r in conn.execute("PRAGMA table_info(results)")}
        conn.execute(
            "INSERT INTO results (setting_id, cell_id, selection, is_primary, model, dataset,"
            " distribution, alignment, task, seed, mode, rate, condition, metrics, knobs,"
            " mask_rng) VALUES ('m/synth/iid/aligned/binary/seed1',"
            " 'synth/iid/aligned/binary/RMM@0.5', 'none', 1, 'm', 'synth', 'iid', 'aligned',"
            " 'binary', 1, 'RMM', 0.5, NULL, '{\"acc3\": 0.5}', '{}', 'per-sample')"
        )
    with ResultsStore(tmp_path) as store:
        cols = {r[1] for r in store._conn.execute("PRAGMA table_info(results)")}
        assert {"regime", "train_rate"} <= cols
        frame = metrics_frame(store)
        assert list(frame.columns).index("regime") == 6
        assert list(frame["regime"]) == ["native"] and frame["acc3"].iloc[0] == 0.5


def test_a_store_written_before_data_fingerprints_opens_with_unknown_data(tmp_path) -> None:
    """Stores from before data fingerprints gain the columns; their rows read as NULL
    (unknown data) and new rows are written by column name into the migrated tables."""
    import sqlite3

    from mer_bench.export import metrics_frame

    setting = TrainingSetting("m", DATA, 1)
    with ResultsStore(tmp_path) as store:
        pass
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:  # back to the old layout
        conn.execute("ALTER TABLE settings DROP COLUMN data_files")
        for table in ("settings", "results"):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN data_fingerprint")
        conn.execute(
            "INSERT INTO settings (setting_id, model, dataset, distribution, alignment, task,"
            " seed, config_hash) VALUES (?, 'm', 'synth', 'iid', 'aligned', 'binary', 1, 'old')",
            (setting.id,),
        )
        conn.execute(
            "INSERT INTO results (setting_id, cell_id, selection, is_primary, model, dataset,"
            " distribution, alignment, task, seed, mode, rate, condition, metrics, knobs,"
            " mask_rng) VALUES (?, 'synth/iid/aligned/binary/RMM@0.5', 'none', 1, 'm', 'synth',"
            " 'iid', 'aligned', 'binary', 1, 'RMM', 0.5, NULL, '{\"acc3\": 0.5}', '{}',"
            " 'per-sample')",
            (setting.id,),
        )
    with ResultsStore(tmp_path) as store:
        stored = store.setting_record(setting)
        assert stored is not None and stored["config_hash"] == "old"
        assert stored["data_fingerprint"] is None and stored["data_files"] is None
        frame = store.results_frame()
        assert frame["data_fingerprint"].isna().all() and frame["data_files"].isna().all()
        assert metrics_frame(store)["acc3"].tolist() == [0.5]
        record(
            store,
            setting,
            Cell(DATA, Mode.RMM, 0.0),
            [_row(0)],
            config_hash="new",
            data_fingerprint="f" * 16,
        )
        frame = store.results_frame().set_index("cell_id")
        assert frame.loc["synth/iid/aligned/binary/RMM@0.0", "data_fingerprint"] == "f" * 16
        assert frame.loc["synth/iid/aligned/binary/RMM@0.0", "config_hash"] == "new"
        assert store.discard_setting(setting) == 2
        assert store.setting_record(setting) is None and store.count_cells() == 0


def _open_store(folder: str) -> str:
    from mer_bench.store import ResultsStore

    with ResultsStore(folder) as store:
        return store._conn.execute("PRAGMA journal_mode").fetchone()[0]


def test_processes_creating_one_store_together_all_succeed(tmp_path) -> None:
    """Creating a store switches it to WAL, which SQLite refuses at once ("locked") while
    another process holds the file; concurrent creators retry instead of failing."""
    import multiprocessing as mp

    folders = [str(tmp_path / f"store{i}") for i in range(6)]
    with mp.get_context("spawn").Pool(4) as pool:
        modes = pool.map(_open_store, [f for f in folders for _ in range(4)])
    assert modes == ["wal"] * len(modes)
