"""Reports over the training-regime axis: systems, per-model clean baselines, curve summaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mer_bench.metrics import Aggregate, auilc
from mer_bench.protocol import RATES, Cell, Mode, Regime, TrainingRegime, TrainingSetting
from mer_bench.report.data import Predictions, load_frame
from mer_bench.report.tables import ER, RR, TableOptions, build_tables, render_markdown
from mer_bench.store import ResultsStore
from tests.report.helpers import DATA, SEEDS, _reverse_rows, _row, labels, predictions
from tests.store_helpers import record

MIXTURE = TrainingRegime(Regime.MIXTURE)
CLEAN = TrainingRegime(Regime.CLEAN)
SYSTEMS = (("m", CLEAN, "base"), ("m", MIXTURE, "good"), ("n", TrainingRegime(), "base"))


def _level(rate: float) -> float:
    return 0.05 + 0.5 * rate


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("regimes")
    with ResultsStore(folder) as store:
        for model, regime, kind in SYSTEMS:
            for seed in SEEDS:
                setting = TrainingSetting(model, DATA, seed, regime)
                for rate in RATES:
                    pred = predictions(kind, seed, _level(rate))
                    record(
                        store,
                        setting,
                        Cell(DATA, Mode.RMFM, rate),
                        _reverse_rows([_row("none", True, pred)]),
                    )
    return folder


def _acc(kind: str, seed: int, rate: float) -> float:
    return float(np.mean(predictions(kind, seed, _level(rate)) == labels()))


def _tables(store_dir: Path, **kw):
    opts = TableOptions(metrics=("acc3",), n_resamples=999, n_boot=100, **kw)
    with ResultsStore(store_dir, create=False) as store:
        frame = load_frame(store)
        return frame, build_tables(frame, Predictions(store), opts)


def test_systems_and_the_per_model_clean_baseline(store_dir: Path) -> None:
    frame, (table,) = _tables(store_dir)
    mix = "m[mixture(p_complete=0.5,r_max=1)]"
    assert set(frame["model"]) == {"m[clean]", mix, "n"}
    assert set(frame["regime"]) == {"clean", "mixture(p_complete=0.5,r_max=1)", "native"}
    assert table.baseline == "regime=clean"
    (block,) = table.blocks
    assert block.columns[-3:] == ("AUILC", RR, ER)
    better = block.entries[(mix, "AUILC")]
    assert better.comparison is not None and better.mark == 1
    # n has no clean-trained run: shown, never compared
    assert block.entries[("n", "AUILC")].comparison is None and ("n", ER) not in block.entries
    # relative robustness: the per-seed area over the clean score, mean over seeds
    rr = [auilc([_acc("good", s, r) for r in RATES]) / _acc("good", s, 0.0) for s in SEEDS]
    assert block.entries[(mix, RR)].mean == pytest.approx(np.mean(rr))
    # effective robustness: area lost to missing data, minus the clean-trained run's
    lost = [
        (auilc([_acc(k, s, r) for r in RATES]) - _acc(k, s, 0.0))
        for k in ("good", "base")
        for s in SEEDS
    ]
    er = np.array(lost[:3]) - np.array(lost[3:])
    entry = block.entries[(mix, ER)]
    assert entry.mean == pytest.approx(er.mean())
    assert entry.comparison is not None
    assert entry.comparison.diff == pytest.approx(er.mean())
    assert entry.comparison.ci_low <= entry.comparison.diff <= entry.comparison.ci_high
    text = render_markdown([table])
    assert "curve summary AUILC" in text and "effective robustness" in text


def test_mean_over_rates_aggregate_never_shares_a_column_with_auilc(store_dir: Path) -> None:
    _, (table,) = _tables(store_dir, aggregate=Aggregate.MEAN_0_09, suites=("lnln",))
    (block,) = table.blocks
    assert "mean@0-0.9" in block.columns and "AUILC" not in block.columns
    mix = "m[mixture(p_complete=0.5,r_max=1)]"
    expected = np.mean([np.mean([_acc("good", s, r) for r in RATES[:10]]) for s in SEEDS])
    assert block.entries[(mix, "mean@0-0.9")].mean == pytest.approx(expected)
    assert (
        "Protocol suite: lnln" in table.caption() and "mean over rates 0.0-0.9" in table.caption()
    )


def test_explicit_baseline_still_compares_against_one_system(store_dir: Path) -> None:
    _, (table,) = _tables(store_dir, baseline="n")
    assert table.models[0] == "n"
    (block,) = table.blocks
    assert block.entries[("m[clean]", "AUILC")].comparison.diff == pytest.approx(0.0)
