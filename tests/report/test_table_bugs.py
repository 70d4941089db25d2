"""Tables: a metric asked for is tabled where it exists (stores with several tasks), every tied
best value is bold, and the help text prints its percent signs once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mer_bench.errors import ConfigError
from mer_bench.metrics import compute_metrics
from mer_bench.protocol import (
    CONDITIONS,
    RATES,
    Cell,
    DataSetting,
    Mode,
    Task,
    TrainingSetting,
)
from mer_bench.report.data import Predictions, load_frame
from mer_bench.report.tables import TableOptions, build_tables, render_latex, render_markdown
from mer_bench.store import CellRow, ResultsStore
from tests.report.helpers import write_store
from tests.store_helpers import record

SEVEN = DataSetting.parse("synth/iid/aligned/seven")
FAST = dict(n_resamples=199, n_boot=50)


def _add_seven(folder: Path, models: tuple[str, ...]) -> None:
    """Seven-class rows for ``models`` (identical predictions, a known accuracy)."""
    n = 70
    y = np.arange(n) % 7
    with ResultsStore(folder) as store:
        for model in models:
            for seed in (1111, 1112, 1113):
                setting = TrainingSetting(model, SEVEN, seed)
                cells = [Cell(SEVEN, Mode.RMFM, r) for r in RATES]
                cells += [Cell(SEVEN, Mode.SMM, None, c) for c in CONDITIONS]
                for cell in cells:
                    pred = np.where(np.arange(n) < 30, y, (y + 1) % 7)
                    scores = np.full((n, 7), 0.1, dtype=np.float32)
                    scores[np.arange(n), pred] = 0.9
                    row = CellRow(
                        "none",
                        True,
                        compute_metrics(Task.SEVEN, scores, y),
                        {},
                        {},
                        y.astype(np.float64),
                        scores,
                        np.arange(n),
                    )
                    record(
                        store,
                        setting,
                        cell,
                        [row],
                        git_hash="abc",
                    )


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_store(tmp_path_factory.mktemp("mixed"), models=("base", "same"))
    _add_seven(folder, ("base", "same"))
    return folder


def _tables(folder: Path, **kw) -> list:
    with ResultsStore(folder, create=False) as store:
        return build_tables(load_frame(store), Predictions(store), TableOptions(**FAST, **kw))


def test_a_metric_of_one_task_is_tabled_where_it_exists(mixed_store: Path) -> None:
    tables = _tables(mixed_store, metrics=("non0_acc2",))
    assert [(t.data_id, t.metric) for t in tables] == [("synth/iid/aligned/binary", "non0_acc2")]
    both = _tables(mixed_store, metrics=("non0_acc2", "acc7"))
    assert [(t.data_id, t.metric) for t in both] == [
        ("synth/iid/aligned/binary", "non0_acc2"),
        ("synth/iid/aligned/seven", "acc7"),
    ]
    with pytest.raises(ConfigError, match=r"'mae' is not reported for tasks binary, seven"):
        _tables(mixed_store, metrics=("non0_acc2", "mae"))


def test_bold_marks_every_tied_best_value(mixed_store: Path) -> None:
    (table,) = _tables(mixed_store, metrics=("acc7",))
    text = render_markdown([table])
    rows = [
        line
        for line in text.splitlines()
        if line.startswith(("| base", "| same")) and "±" in line  # value rows, not Δ rows
    ]
    assert len(rows) == 2 * 2  # two blocks (rates, SMM), two models
    marked = 0
    for base, same in (rows[0:2], rows[2:4]):
        pairs = zip(base.strip("|").split("|")[1:], same.strip("|").split("|")[1:])
        for a, b in pairs:
            if "±" in a and "±" in b:  # both have a value: identical, so both bold
                assert a.strip().startswith("**") and b.strip().startswith("**"), (a, b)
                marked += 1
    assert marked >= 5 + 7  # at least the rate columns and the SMM conditions
    latex = [
        ln
        for ln in render_latex([table]).splitlines()
        if ln.startswith(("base", "same")) and "pm" in ln
    ]
    bold = [ln.count("\\textbf{42.9") for ln in latex]
    assert len(bold) == 4 and bold[0] == bold[1] >= 5 and bold[2] == bold[3] > 0


def test_table_help_prints_percent_once(capsys: pytest.CaptureFixture[str]) -> None:
    from mer_bench.cli import main

    for command in ("table", "plot"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "95%" in out and "%%" not in out
