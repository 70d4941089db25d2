"""The embedded results store: SQLite in WAL mode inside the results folder.

One row per finished (training setting, cell, selection) with metrics, selected knobs and
provenance, and the per-sample predictions of that cell. A cell counts as done only when all its
rows and predictions are committed in one transaction, so a run killed at any point (SIGKILL
included) leaves either the whole cell or nothing; rerunning skips what is done.

Each setting and result row records the fingerprint of the data it was computed from
(``mer_bench.data.types.data_fingerprint``); rows of stores written before that column existed
read it as NULL (unknown).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mer_bench.errors import MerBenchError
from mer_bench.protocol import Cell, TrainingSetting

STORE_FILE = "results.sqlite"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (
    setting_id TEXT PRIMARY KEY,
    model TEXT NOT NULL, dataset TEXT NOT NULL, distribution TEXT NOT NULL,
    alignment TEXT NOT NULL, task TEXT NOT NULL, seed INTEGER NOT NULL,
    best_epoch INTEGER, best_valid REAL, epochs INTEGER, train_seconds REAL,
    checkpoint TEXT, params TEXT, history TEXT, config_hash TEXT, device TEXT,
    finished_at TEXT, params_source TEXT,
    regime TEXT NOT NULL DEFAULT 'native', train_rate REAL,
    data_fingerprint TEXT, data_files TEXT
);
CREATE TABLE IF NOT EXISTS results (
    setting_id TEXT NOT NULL, cell_id TEXT NOT NULL, selection TEXT NOT NULL,
    is_primary INTEGER NOT NULL,
    model TEXT NOT NULL, dataset TEXT NOT NULL, distribution TEXT NOT NULL,
    alignment TEXT NOT NULL, task TEXT NOT NULL, seed INTEGER NOT NULL,
    mode TEXT NOT NULL, rate REAL, condition TEXT,
    metrics TEXT NOT NULL, knobs TEXT NOT NULL, per_metric_knobs TEXT,
    mask_rng TEXT NOT NULL, wall_seconds REAL, device TEXT, versions TEXT,
    git_hash TEXT, config_hash TEXT, finished_at TEXT,
    regime TEXT NOT NULL DEFAULT 'native', train_rate REAL, data_fingerprint TEXT,
    PRIMARY KEY (setting_id, cell_id, selection)
);
CREATE TABLE IF NOT EXISTS predictions (
    setting_id TEXT NOT NULL, cell_id TEXT NOT NULL, selection TEXT NOT NULL,
    n INTEGER NOT NULL, n_scores INTEGER NOT NULL,
    sample_index BLOB NOT NULL, labels BLOB NOT NULL, scores BLOB NOT NULL,
    PRIMARY KEY (setting_id, cell_id, selection)
);
CREATE TABLE IF NOT EXISTS samples (
    data_id TEXT NOT NULL, split TEXT NOT NULL, sample_ids TEXT NOT NULL,
    PRIMARY KEY (data_id, split)
);
"""


@dataclass(frozen=True)
class CellRow:
    """What the runner writes for one selection of one cell."""

    selection: str
    is_primary: bool
    metrics: dict[str, float]
    knobs: dict[str, float]
    per_metric_knobs: dict[str, dict[str, float]]
    labels: np.ndarray
    scores: np.ndarray
    sample_index: np.ndarray


class ResultsStore:
    """A handle on ``<out>/results.sqlite``; safe for several processes at once."""

    def __init__(self, folder: Path | str, *, create: bool = True) -> None:
        self.folder = Path(folder)
        self.path = self.folder / STORE_FILE
        if not create and not self.path.is_file():
            raise MerBenchError(
                f"no results store at {self.path}; run `python -m mer_bench run` first "
                "or pass --results DIR"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=120.0, isolation_level=None)
        _use_wal(self._conn)
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=120000")
        with self.transaction() as cur:
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    cur.execute(statement)
            cur.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (SCHEMA_VERSION,),
            )
            _add_regime_columns(cur)
            _add_data_columns(cur)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any error."""
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    # ------------------------------------------------------------------ meta
    def record_suite(self, name: str) -> None:
        """Remember that a run of protocol suite ``name`` wrote into this store."""
        with self.transaction() as cur:
            row = cur.execute("SELECT value FROM meta WHERE key = 'suites'").fetchone()
            names = json.loads(row[0]) if row else []
            if name not in names:
                names.append(name)
            cur.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('suites', ?)", (json.dumps(names),)
            )

    def suites(self) -> list[str]:
        """The protocol suites whose runs wrote into this store, in first-run order."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'suites'").fetchone()
        return list(json.loads(row[0])) if row else []

    # ------------------------------------------------------------------ settings
    def setting_record(self, setting: TrainingSetting) -> dict | None:
        row = self._conn.execute(
            "SELECT best_epoch, best_valid, epochs, train_seconds, checkpoint, params, history,"
            " config_hash, device, params_source, data_fingerprint, data_files"
            " FROM settings WHERE setting_id = ?",
            (setting.id,),
        ).fetchone()
        if row is None:
            return None
        keys = (
            "best_epoch",
            "best_valid",
            "epochs",
            "train_seconds",
            "checkpoint",
            "params",
            "history",
            "config_hash",
            "device",
            "params_source",
            "data_fingerprint",
            "data_files",
        )
        record = dict(zip(keys, row))
        record["params"] = json.loads(record["params"] or "{}")
        record["history"] = json.loads(record["history"] or "[]")
        record["params_source"] = json.loads(record["params_source"] or "null")
        record["data_files"] = json.loads(record["data_files"] or "null")
        return record

    def record_setting(
        self,
        setting: TrainingSetting,
        *,
        best_epoch: int,
        best_valid: float,
        epochs: int,
        train_seconds: float,
        checkpoint: str,
        params: dict,
        history: list[dict],
        config_hash: str,
        device: str,
        params_source: dict | None = None,
        data_fingerprint: str | None = None,
        data_files: list[dict] | None = None,
    ) -> None:
        d = setting.data
        values = {
            "setting_id": setting.id,
            "model": setting.model,
            **d.as_dict(),
            "seed": setting.seed,
            "best_epoch": best_epoch,
            "best_valid": best_valid,
            "epochs": epochs,
            "train_seconds": train_seconds,
            "checkpoint": checkpoint,
            "params": json.dumps(params, sort_keys=True),
            "history": json.dumps(history),
            "config_hash": config_hash,
            "device": device,
            "finished_at": _now(),
            "params_source": json.dumps(params_source) if params_source else None,
            "regime": setting.regime.label,
            "train_rate": setting.regime.rate,
            "data_fingerprint": data_fingerprint,
            "data_files": None if data_files is None else json.dumps(data_files),
        }
        with self.transaction() as cur:
            _insert(cur, "INSERT OR REPLACE INTO settings", values)

    def discard_setting(self, setting: TrainingSetting) -> int:
        """Delete a setting's record, result rows and predictions in one transaction (its data
        changed: they no longer describe what a rerun computes). Returns the cells dropped."""
        with self.transaction() as cur:
            n = cur.execute(
                "SELECT COUNT(DISTINCT cell_id) FROM results WHERE setting_id = ?", (setting.id,)
            ).fetchone()[0]
            for table in ("predictions", "results", "settings"):
                cur.execute(f"DELETE FROM {table} WHERE setting_id = ?", (setting.id,))
        return int(n)

    # ------------------------------------------------------------------ cells
    def done_cells(self, setting: TrainingSetting) -> set[str]:
        rows = self._conn.execute(
            "SELECT DISTINCT cell_id FROM results WHERE setting_id = ?", (setting.id,)
        ).fetchall()
        return {r[0] for r in rows}

    def record_sample_ids(self, data_id: str, split: str, sample_ids: Sequence[str]) -> None:
        """The sample ids of a data setting's split, as the latest training read them (its data
        may have changed since an earlier setting recorded them)."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO samples VALUES (?,?,?)",
                (data_id, split, json.dumps([str(s) for s in sample_ids])),
            )

    def sample_ids(self, data_id: str, split: str = "test") -> list[str] | None:
        row = self._conn.execute(
            "SELECT sample_ids FROM samples WHERE data_id = ? AND split = ?", (data_id, split)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def record_cell(
        self,
        setting: TrainingSetting,
        cell: Cell,
        rows: Sequence[CellRow],
        *,
        mask_rng: str,
        wall_seconds: float,
        device: str,
        versions: dict[str, str],
        git_hash: str,
        config_hash: str,
        data_fingerprint: str | None = None,
    ) -> bool:
        """Commit every selection of one cell and its predictions atomically.

        Returns False (and writes nothing) if the cell was already done — e.g. by a concurrent
        worker — so no cell is ever duplicated.
        """
        d = setting.data
        with self.transaction() as cur:
            exists = cur.execute(
                "SELECT 1 FROM results WHERE setting_id = ? AND cell_id = ? LIMIT 1",
                (setting.id, cell.id),
            ).fetchone()
            if exists:
                return False
            for row in rows:
                values = {
                    "setting_id": setting.id,
                    "cell_id": cell.id,
                    "selection": row.selection,
                    "is_primary": int(row.is_primary),
                    "model": setting.model,
                    **d.as_dict(),
                    "seed": setting.seed,
                    "mode": cell.mode.value,
                    "rate": cell.rate,
                    "condition": cell.condition,
                    "metrics": json.dumps(row.metrics, sort_keys=True),
                    "knobs": json.dumps(row.knobs, sort_keys=True),
                    "per_metric_knobs": json.dumps(row.per_metric_knobs, sort_keys=True),
                    "mask_rng": mask_rng,
                    "wall_seconds": wall_seconds,
                    "device": device,
                    "versions": json.dumps(versions, sort_keys=True),
                    "git_hash": git_hash,
                    "config_hash": config_hash,
                    "finished_at": _now(),
                    "regime": setting.regime.label,
                    "train_rate": setting.regime.rate,
                    "data_fingerprint": data_fingerprint,
                }
                _insert(cur, "INSERT INTO results", values)
                scores = np.ascontiguousarray(row.scores, dtype=np.float32)
                cur.execute(
                    "INSERT INTO predictions VALUES (?,?,?,?,?,?,?,?)",
                    (
                        setting.id,
                        cell.id,
                        row.selection,
                        int(scores.shape[0]),
                        int(scores.shape[1]) if scores.ndim == 2 else 0,
                        np.ascontiguousarray(row.sample_index, dtype=np.int64).tobytes(),
                        np.ascontiguousarray(row.labels, dtype=np.float64).tobytes(),
                        scores.tobytes(),
                    ),
                )
        return True

    # ------------------------------------------------------------------ reading
    def results_frame(self, primary_only: bool = False):
        """All result rows as a pandas DataFrame (metrics expanded to columns)."""
        import pandas as pd

        # The files behind each row's data fingerprint live once per setting.
        query = (
            "SELECT r.*, s.data_files AS data_files FROM results r"
            " LEFT JOIN settings s ON s.setting_id = r.setting_id"
        )
        if primary_only:
            query += " WHERE r.is_primary = 1"
        order = " ORDER BY r.setting_id, r.cell_id, r.selection"
        return pd.read_sql_query(query + order, self._conn)

    def predictions(self, setting_id: str, cell_id: str, selection: str):
        row = self._conn.execute(
            "SELECT n, n_scores, sample_index, labels, scores FROM predictions"
            " WHERE setting_id = ? AND cell_id = ? AND selection = ?",
            (setting_id, cell_id, selection),
        ).fetchone()
        if row is None:
            return None
        n, c, idx, labels, scores = row
        scores_arr = np.frombuffer(scores, dtype=np.float32)
        return (
            np.frombuffer(idx, dtype=np.int64),
            np.frombuffer(labels, dtype=np.float64),
            scores_arr.reshape(n, c) if c else scores_arr,
        )

    def count_cells(self) -> int:
        return int(
            self._conn.execute(
                "SELECT COUNT(*) FROM (SELECT DISTINCT setting_id, cell_id FROM results)"
            ).fetchone()[0]
        )


def _use_wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    """Switch the file to WAL mode (persistent) unless it already is. The switch needs the file
    to itself and SQLite answers "locked" at once instead of waiting when two processes create
    the store together, so it is retried for a few seconds."""
    for attempt in range(attempts):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05 + 0.01 * attempt)


def _add_regime_columns(cur: sqlite3.Cursor) -> None:
    """Stores written before the training-regime axis existed: every setting was ``native``."""
    for table in ("settings", "results"):
        have = {row[1] for row in cur.execute(f"PRAGMA table_info({table})")}
        if "regime" not in have:
            cur.execute(f"ALTER TABLE {table} ADD COLUMN regime TEXT NOT NULL DEFAULT 'native'")
        if "train_rate" not in have:
            cur.execute(f"ALTER TABLE {table} ADD COLUMN train_rate REAL")


def _add_data_columns(cur: sqlite3.Cursor) -> None:
    """Stores written before data fingerprints existed: their rows' data is unknown (NULL)."""
    wanted = {"settings": ("data_fingerprint", "data_files"), "results": ("data_fingerprint",)}
    for table, columns in wanted.items():
        have = {row[1] for row in cur.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column not in have:
                cur.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")


def _insert(cur: sqlite3.Cursor, head: str, values: dict[str, object]) -> None:
    """``head (columns) VALUES (...)`` by column name: a migrated table's column order may
    differ from a new one's."""
    columns = ", ".join(values)
    marks = ", ".join("?" * len(values))
    cur.execute(f"{head} ({columns}) VALUES ({marks})", tuple(values.values()))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
