"""Protocol suites: what each one plans, and how reports pick their curve summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from mer_bench.cli import main
from mer_bench.cli.report import choose_aggregate
from mer_bench.errors import ConfigError
from mer_bench.metrics import Aggregate
from mer_bench.protocol import Mode, Regime
from mer_bench.runner import RunOptions, plan
from mer_bench.store import ResultsStore
from mer_bench.suites import SUITES, get_suite
from tests.conftest import MEANPOOL


def _plan(name: str, root: Path, out: Path):
    suite = get_suite(name)
    opts = RunOptions(
        models=(MEANPOOL,),
        selector=suite.selector,
        data_root=str(root),
        seeds=suite.seeds,
        out=str(out),
        suite=suite.name,
    )
    return plan(opts)


def test_each_suite_plans_its_protocol(tiny_synth_root: Path, tmp_path: Path) -> None:
    lnln = _plan("lnln", tiny_synth_root, tmp_path)
    cells = {c for p in lnln for c in p.cells}
    assert {c.mode for c in cells} == {Mode.RMFM} and max(c.rate for c in cells) == 0.9
    assert {p.setting.seed for p in lnln} == {1111, 1112, 1113}
    emt = _plan("emt-dlfr", tiny_synth_root, tmp_path)
    assert all(p.setting.regime.kind is Regime.MATCHED for p in emt)
    assert all({c.rate for c in p.cells} == {p.setting.regime.rate} for p in emt)
    assert len(emt) == len(lnln) * 11  # one training per rate 0.0-1.0 instead of one
    fair = _plan("fair", tiny_synth_root, tmp_path)
    assert {p.setting.regime.kind for p in fair} == {Regime.CLEAN, Regime.MIXTURE}
    assert {p.setting.data.task.value for p in fair} == {"binary"}
    assert get_suite("cider").aggregate is Aggregate.AUILC
    assert SUITES["lnln"].aggregate is Aggregate.MEAN_0_09


def test_suite_errors_and_listing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="did you mean 'fair'"):
        get_suite("fiar")
    assert main(["suites"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SUITES) and "4 suites" in out
    assert main(["run", "--models", "mult", "--suite", "fair", "--protocol", "all"]) == 2
    assert "drop --protocol" in capsys.readouterr().err


def test_tables_take_the_aggregate_of_the_store_suites(tmp_path: Path) -> None:
    with ResultsStore(tmp_path) as store:
        store.record_suite("lnln")
        store.record_suite("lnln")
        assert store.suites() == ["lnln"]
    assert choose_aggregate(None, ("lnln",)) is Aggregate.MEAN_0_09
    assert choose_aggregate(None, ()) is Aggregate.AUILC
    assert choose_aggregate("AUILC", ("lnln",)) is Aggregate.AUILC
    with pytest.raises(ConfigError, match="--aggregate"):
        choose_aggregate(None, ("lnln", "cider"))
