from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_bench.cli import report
from mer_bench.errors import ConfigError
from mer_bench.report.data import Predictions, load_frame
from mer_bench.report.leaderboard import merge_entry, read_entry, render_all
from mer_bench.report.tables import (
    TableOptions,
    build_tables,
    build_tau_comparison,
    render_csv,
    render_latex,
    render_markdown,
    render_tau,
)
from mer_bench.store import ResultsStore
from tests.report.helpers import labels, predictions, write_store
from tests.store_helpers import record

FAST = TableOptions(n_resamples=1999, n_boot=200)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("store"), oracle_model="knob")


@pytest.fixture(scope="module")
def tables(store_dir):
    with ResultsStore(store_dir, create=False) as store:
        return build_tables(
            load_frame(store),
            Predictions(store),
            TableOptions(
                metrics=("acc3",), models=("base", "good", "same"), n_resamples=1999, n_boot=200
            ),
        )


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    report.register(sub)
    args = parser.parse_args(argv)
    return args.handler(args)


def test_table_marks_the_better_model_and_not_the_identical_one(tables) -> None:
    (table,) = tables
    assert table.baseline == "base" and table.models == ("base", "good", "same")
    rmfm, smm = table.blocks
    assert rmfm.columns == ("0.0", "0.3", "0.5", "0.7", "1.0", "AUILC", "RR", "ER")
    assert smm.columns == ("T", "A", "V", "TA", "TV", "AV", "TAV")
    assert table.n_comparisons == 2 * (6 + 1 + 7)  # ER is tested; RR (a ratio) is not
    y = labels()
    for col in ("0.0", "0.5", "AUILC"):
        good = rmfm.entries[("good", col)]
        same = rmfm.entries[("same", col)]
        assert good.mark == 1 and good.comparison.diff > 0 and good.p_holm < 0.05
        assert good.comparison.ci_low > 0
        assert same.mark == 0 and same.comparison.p_value == 1.0 and same.comparison.diff == 0
    # mean ± sd over seeds (ddof=1) of the stored accuracies at rate 0.0
    accs = [np.mean(predictions("good", s, 0.05) == y) for s in (1111, 1112, 1113)]
    entry = rmfm.entries[("good", "0.0")]
    assert entry.mean == pytest.approx(np.mean(accs))
    assert entry.sd == pytest.approx(np.std(accs, ddof=1))


def test_markdown_footnote_and_markers(tables) -> None:
    text = render_markdown(tables)
    assert "good | " in text and "↑" in text and "↓" not in text.split("↑/↓")[0]
    assert "paired permutation test" in text and "Holm-corrected" in text
    assert "α = 0.05" in text and "28 comparisons" in text
    assert "Δ [95% CI]" in text
    same_row = next(line for line in text.splitlines() if line.startswith("| same |"))
    assert "↑" not in same_row and "↓" not in same_row


def test_latex_is_structurally_valid(tables) -> None:
    tex = render_latex(tables)
    for env in ("table", "tabular"):
        assert tex.count(f"\\begin{{{env}}}") == tex.count(f"\\end{{{env}}}") >= 1
    assert tex.count("{") == tex.count("}") + tex.count("\\{") - tex.count("\\}")
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\textbf{" in tex
    spec = re.search(r"\\begin\{tabular\}\{(l+r+)\}", tex).group(1)
    main = tex.split("\\begin{tabular}")[1].split("\\end{tabular}")[0]
    rows = [r for r in main.split("\\\\\n") if "&" in r]
    assert rows and all(r.count("&") == len(spec) - 1 for r in rows)
    assert "$^{\\uparrow}$" in tex and "\\_" not in "base"


def test_csv_round_trips(tables) -> None:
    frame = pd.read_csv(io.StringIO(render_csv(tables)))
    good = frame[(frame["model"] == "good") & (frame["column"] == "AUILC")].iloc[0]
    assert good["significant"] == "better" and good["ci_low"] > 0
    assert set(frame["model"]) == {"base", "good", "same"}


def test_oracle_caption_and_compare_tau(tmp_path) -> None:
    folder = write_store(tmp_path, models=("base",), oracle_model="knob", oracle_primary=True)
    with ResultsStore(folder, create=False) as store:
        frame, preds = load_frame(store), Predictions(store)
        (table,) = build_tables(
            frame, preds, TableOptions(metrics=("acc3",), n_resamples=499, n_boot=100)
        )
        assert table.oracle == ("knob",) and "Test-oracle" in table.caption()
        assert "Q-3" in render_markdown([table])
        rows = build_tau_comparison(frame, preds, FAST)
    assert {r.model for r in rows} == {"knob"}
    row = next(r for r in rows if r.column == "AUILC")
    assert row.metric == "non0_acc2" and row.optimism > 0 and row.ci_low > 0
    assert "optimism" in render_tau(rows, "md")
    csv = pd.read_csv(io.StringIO(render_tau(rows, "csv")))
    assert (csv["optimism"] > 0).all()
    assert "\\end{tabular}" in render_tau(rows, "latex")


def test_cli_table_errors_and_outputs(store_dir, tmp_path, capsys) -> None:
    with pytest.raises(ConfigError, match="nobody"):
        _cli(["table", "--results", str(store_dir), "--baseline", "nobody"])
    with pytest.raises(ConfigError, match="valid"):
        _cli(["table", "--results", str(store_dir), "--metric", "acc7"])
    out = tmp_path / "t.csv"
    assert (
        _cli(
            [
                "table",
                "--results",
                str(store_dir),
                "--format",
                "csv",
                "--out",
                str(out),
                "--metric",
                "acc3",
                "--resamples",
                "499",
                "--bootstrap",
                "100",
                "--models",
                "base,good",
            ]
        )
        == 0
    )
    assert set(pd.read_csv(out)["model"]) == {"base", "good"}


def test_plots_exist_and_parse(store_dir, tmp_path) -> None:
    from matplotlib.image import imread

    assert (
        _cli(
            [
                "plot",
                "--results",
                str(store_dir),
                "--out",
                str(tmp_path),
                "--bootstrap",
                "50",
                "--dpi",
                "80",
                "--models",
                "base,good,same",
            ]
        )
        == 0
    )
    names = {p.name for p in tmp_path.iterdir()}
    stem = "synth_iid_aligned_binary_non0_acc2"
    for kind in ("curves", "smm", "auilc"):
        assert f"{kind}_{stem}.png" in names and f"{kind}_{stem}.pdf" in names
    assert "cd_binary_non0_acc2.png" in names
    for name in names:
        path = tmp_path / name
        if name.endswith(".png"):
            image = imread(path)
            assert image.shape[0] > 100 and image.shape[1] > 150 and image.std() > 0.01
        else:
            assert path.read_bytes()[:5] == b"%PDF-"


def test_leaderboard_merge_keeps_better_provenance(tmp_path) -> None:
    full = write_store(tmp_path / "full", models=("base", "good"))
    few = write_store(tmp_path / "few", models=("base",), seeds=(1111,))
    root = tmp_path / "boards"
    reported = tmp_path / "reported.json"
    reported.write_text(
        json.dumps(
            {
                "reported": [
                    {
                        "model": "base",
                        "setting": "synth/iid/aligned/binary",
                        "source": "Paper X, Table 1",
                        "metrics": {"non0_acc2": 0.9},
                    }
                ]
            }
        )
    )
    assert (
        _cli(
            [
                "leaderboard",
                "--results",
                str(full),
                "--root",
                str(root),
                "--reported",
                str(reported),
            ]
        )
        == 0
    )
    path = root / "synth" / "iid-aligned-binary" / "base.json"
    entry = read_entry(path)
    assert entry["seeds"] == [1111, 1112, 1113] and entry["protocol_version"] == "1.0"
    assert entry["reported"][0]["source"] == "Paper X, Table 1"
    assert entry["provenance"]["git_hash"] == "abc123"
    auilc = entry["modes"]["RMFM"]["auilc"]["non0_acc2"]
    assert len(auilc["per_seed"]) == 3 and auilc["sd"] is not None
    rr = entry["modes"]["RMFM"]["relative_robustness"]["non0_acc2"]
    clean = entry["modes"]["RMFM"]["rates"]["0.0"]["non0_acc2"]["per_seed"]
    assert rr["per_seed"] == pytest.approx([a / c for a, c in zip(auilc["per_seed"], clean)])
    assert entry["regime"] == "native"
    assert set(entry["modes"]["SMM"]["conditions"]) == {"T", "A", "V", "TA", "TV", "AV", "TAV"}
    # a one-seed run must not silently replace the three-seed entry
    with ResultsStore(few, create=False) as store:
        from mer_bench.report.leaderboard import entries_from_frame

        (weaker,) = entries_from_frame(load_frame(store))
    outcome = merge_entry(root, weaker)
    assert outcome.action == "kept" and read_entry(path)["seeds"] == [1111, 1112, 1113]
    outcome = merge_entry(root, weaker, force=True)
    assert outcome.action == "updated" and read_entry(path)["seeds"] == [1111]
    assert read_entry(path)["reported"][0]["source"] == "Paper X, Table 1"  # carried over
    render_all(root)
    text = (root / "README.md").read_text()
    table = text[text.index("| rank |") :]
    assert table.index("| 1 | good |") < table.index("| 2 | base |")
    assert "Paper X, Table 1" in text
    assert (root / "synth" / "iid-aligned-binary" / "README.md").is_file()


def _entry(folder: Path, **kw) -> dict:
    from mer_bench.report.leaderboard import entries_from_frame

    with ResultsStore(write_store(folder, models=("base",), **kw), create=False) as store:
        (entry,) = entries_from_frame(load_frame(store))
    return entry


def test_leaderboard_refuses_results_on_other_data_unless_forced(tmp_path, capsys) -> None:
    """Provenance ranks evidence about one dataset; results on other data (a regenerated or
    re-extracted file) neither replace nor yield to an entry silently."""
    from mer_bench.errors import DataError

    old_fp, new_fp = "a" * 16, "b" * 16
    root = tmp_path / "boards"
    path = root / "synth" / "iid-aligned-binary" / "base.json"
    merge_entry(root, _entry(tmp_path / "old", data_fingerprint=old_fp))
    assert read_entry(path)["provenance"]["data_fingerprint"] == old_fp
    before = path.read_text()
    # fewer seeds on new data: provenance alone would keep the old entry without a word
    newer = write_store(tmp_path / "new", models=("base",), seeds=(1111,), data_fingerprint=new_fp)
    argv = ["leaderboard", "--results", str(newer), "--root", str(root)]
    with pytest.raises(DataError) as err:
        _cli(argv)
    message = str(err.value)
    assert "\n" not in message and old_fp in message and new_fp in message
    assert str(path) in message and "--force" in message
    assert path.read_text() == before  # nothing written
    with pytest.raises(DataError, match=old_fp):
        merge_entry(root, _entry(tmp_path / "api", seeds=(1111,), data_fingerprint=new_fp))
    # an entry without a fingerprint (written before them) is unknown data: refused too
    legacy = json.loads(before)
    del legacy["provenance"]["data_fingerprint"], legacy["provenance"]["data_files"]
    path.write_text(json.dumps(legacy))
    with pytest.raises(DataError, match=f"unknown.*{new_fp}"):
        _cli(argv)
    # --force replaces it and says which data replaced which
    capsys.readouterr()
    assert _cli([*argv, "--force"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("updated")]
    assert line.index("data unknown") < line.index(f"data {new_fp}")
    entry = read_entry(path)
    assert entry["provenance"]["data_fingerprint"] == new_fp and entry["seeds"] == [1111]


def test_leaderboard_entry_refuses_rows_from_different_data(tmp_path) -> None:
    """Seeds computed on different data never average into one entry."""
    from mer_bench.errors import DataError

    folder = write_store(tmp_path / "s", models=("base",), seeds=(1111,), data_fingerprint="a" * 16)
    write_store(folder, models=("base",), seeds=(1112,), data_fingerprint="b" * 16)
    with pytest.raises(DataError, match="different data.*" + "a" * 16 + ", " + "b" * 16):
        _entry(folder)


def test_leaderboard_entry_records_data_files_by_base_name(tmp_path) -> None:
    from mer_bench.errors import DataError
    from mer_bench.protocol import Cell, Mode, TrainingSetting
    from mer_bench.report.leaderboard import check_entry, entries_from_frame
    from tests.report.helpers import DATA, _row

    files = [{"role": "train/valid/test", "file": "aligned_50.pkl", "sha256": "c" * 64}]
    with ResultsStore(tmp_path) as store:
        setting = TrainingSetting("base", DATA, 1111)
        store.record_setting(
            setting,
            best_epoch=1,
            best_valid=0.5,
            epochs=1,
            train_seconds=0.0,
            checkpoint="x",
            params={},
            history=[],
            config_hash="h",
            device="cpu",
            data_fingerprint="d" * 16,
            data_files=[{**files[0], "file": "/home/someone/data/aligned_50.pkl"}],
        )
        record(
            store,
            setting,
            Cell(DATA, Mode.RMM, 0.0),
            [_row("none", True, predictions("base", 1111, 0.0))],
            data_fingerprint="d" * 16,
        )
        (entry,) = entries_from_frame(load_frame(store))
    assert entry["provenance"]["data_fingerprint"] == "d" * 16
    assert entry["provenance"]["data_files"] == files
    check_entry(entry)
    bad = json.loads(json.dumps(entry))
    bad["provenance"]["data_files"][0]["file"] = "/home/someone/data/aligned_50.pkl"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError, match="base name"):
        read_entry(path)


def test_entries_written_before_data_fingerprints_still_load(tmp_path: Path) -> None:
    """An entry file from before the data fingerprint (no data fields in its provenance) loads
    and reads as unknown data; the committed entries all name their data."""
    import shutil

    from mer_bench.report.leaderboard import data_fingerprint_of, load_entries

    committed = Path(__file__).parents[2] / "leaderboards"
    entries = [e for e in load_entries(committed) if e.get("modes")]
    assert entries and all(data_fingerprint_of(e) for e in entries)
    source = committed / "synth" / "iid-aligned-binary" / "mult.json"
    old = json.loads(source.read_text())
    for key in ("data_fingerprint", "data_files"):
        old["provenance"].pop(key)
    folder = tmp_path / "synth" / "iid-aligned-binary"
    folder.mkdir(parents=True)
    (folder / "mult.json").write_text(json.dumps(old))
    shutil.copy(committed / "reported.json", tmp_path / "reported.json")
    (entry,) = [e for e in load_entries(tmp_path) if e.get("modes")]
    assert data_fingerprint_of(entry) is None


def test_committed_reported_figures_parse() -> None:
    data = json.loads((Path(__file__).parents[2] / "leaderboards" / "reported.json").read_text())
    items = data["reported"]
    assert {"mult", "self_mm", "emt_dlfr", "lnln", "tfr_net"} <= {i["model"] for i in items}
    # TFR-Net's figures reach us only through EMT-DLFR's tables: marked as such.
    assert all("second-hand" in i["note"] for i in items if i["model"] == "tfr_net")
    for item in items:
        assert item["source"] and item["setting"].split("/")[0] in ("mosi", "mosei")
        for name, value in item["metrics"].items():
            assert 0 < value < 1 or name == "mae", (item["setting"], name, value)
        for values in item.get("per_rate", {}).get("rates", {}).values():
            for name, value in values.items():
                assert 0 < value < 1 or name == "mae", (item["setting"], name, value)
    # EMT-DLFR's published AUILC rows are labelled as such, never as complete-data figures.
    auilc = [i for i in items if i["model"] == "emt_dlfr" and "AUILC" in i.get("protocol", "")]
    assert {i["setting"] for i in auilc} == {
        "mosi/iid/unaligned/regression",
        "mosei/iid/unaligned/regression",
    }


def test_lnln_overall_figures_are_the_mean_of_its_per_rate_figures() -> None:
    """The paper's Table 2 is the plain mean over rates 0.0-0.9 of its Table 9 rows."""
    data = json.loads((Path(__file__).parents[2] / "leaderboards" / "reported.json").read_text())
    items = [i for i in data["reported"] if i["model"] == "lnln"]
    assert {i["setting"] for i in items} == {
        "mosi/iid/unaligned/regression",
        "mosei/iid/unaligned/regression",
    }
    for item in items:
        assert item["selection"] == "test-selected" and "test-selected" in item["protocol"]
        rates = item["per_rate"]["rates"]
        assert sorted(rates, key=float) == [f"{k / 10:.1f}" for k in range(10)]
        for name, overall in item["metrics"].items():
            mean = np.mean([rates[r][name] for r in rates])
            assert mean == pytest.approx(overall, abs=6e-4), (item["setting"], name)


def test_reported_curves_overlay_dashed_on_matching_real_data_panels() -> None:
    import matplotlib.pyplot as plt

    from mer_bench.protocol import Mode
    from mer_bench.report.plots import _overlay_reported, load_reported_curves

    curves = load_reported_curves(Path(__file__).parents[2] / "leaderboards" / "reported.json")
    assert {(c.model, c.data_id, c.mode) for c in curves} == {
        ("lnln", "mosi/iid/unaligned/regression", "RMFM"),
        ("lnln", "mosei/iid/unaligned/regression", "RMFM"),
    }
    mosi = next(c for c in curves if c.data_id.startswith("mosi/"))
    fig, ax = plt.subplots()
    style = {"lnln": ("#123456", "o")}
    _overlay_reported(ax, curves, "mosi/iid/unaligned/regression", Mode.RMFM, "mae", style)
    (line,) = ax.get_lines()
    assert line.get_linestyle() == "--" and line.get_color() == "#123456"
    assert line.get_label() == "lnln reported (test-selected)"
    np.testing.assert_allclose(line.get_xdata(), [k / 10 for k in range(10)])
    np.testing.assert_allclose(line.get_ydata(), mosi.values["mae"])  # MAE is not %-scaled
    _overlay_reported(ax, curves, "mosi/iid/unaligned/regression", Mode.RMFM, "acc5", {})
    assert ax.get_lines()[-1].get_ydata()[0] == pytest.approx(49.76)
    before = len(ax.get_lines())
    # Other mode, other setting, synthetic data: nothing is drawn.
    _overlay_reported(ax, curves, "mosi/iid/unaligned/regression", Mode.RMM, "mae", style)
    _overlay_reported(ax, curves, "mosi/iid/aligned/regression", Mode.RMFM, "mae", style)
    _overlay_reported(ax, curves, "synth/iid/unaligned/regression", Mode.RMFM, "mae", style)
    assert len(ax.get_lines()) == before
    plt.close(fig)


def test_reported_figures_render_with_their_protocol_and_per_rate_rows(tmp_path) -> None:
    from mer_bench.protocol import DataSetting
    from mer_bench.report.leaderboard import render_setting

    data = DataSetting.parse("mosi/iid/unaligned/regression")
    entries = [
        {"model": "old", "reported": [{"source": "Paper A", "metrics": {"mae": 0.9}}]},
        {
            "model": "new",
            "reported": [
                {
                    "source": "Paper B",
                    "selection": "test-selected",
                    "protocol": "mean over rates",
                    "metrics": {"mae": 1.0},
                    "per_rate": {"mode": "RMFM", "rates": {"0.0": {"mae": 0.75}}},
                }
            ],
        },
    ]
    text = render_setting(entries, data)
    assert "| old | 0.900 | complete data, no missing modality | Paper A |" in text
    assert "| new (test-selected) | 1.000 | mean over rates | Paper B |" in text
    assert "new (test-selected), mode RMFM (Paper B)" in text and "| 0.0 | 0.750 |" in text
    with pytest.raises(ConfigError, match="does not exist"):
        _cli(["plot", "--results", str(tmp_path), "--reported", str(tmp_path / "nope.json")])


def test_curve_legend_shows_auilc_and_relative_robustness() -> None:
    import pandas as pd

    from mer_bench.protocol import RATES
    from mer_bench.report.plots import curve_label

    rows = pd.DataFrame(
        [
            {"seed": seed, "rate": r, "non0_acc2": start - 0.3 * r}
            for seed, start in ((1, 0.8), (2, 0.9))
            for r in RATES
        ]
    )
    # per seed: AUILC 0.65 and 0.75 (mean 70.0 %), RR 0.65/0.8 and 0.75/0.9 (mean 0.82)
    assert curve_label("mult", rows, "non0_acc2", RATES, []) == "mult (AUILC 70.0, RR 0.82)"
    partial = rows[~((rows["seed"] == 2) & (rows["rate"] == 0.5))]
    only_one = curve_label("mult", partial[partial["seed"] == 2], "non0_acc2", RATES, [0.5] * 11)
    assert only_one == "mult (AUILC 50.0)"  # no seed complete: the mean curve's area, no RR
    assert curve_label("mult", rows[rows["rate"] < 0.5], "non0_acc2", RATES[:5], [0.5] * 5) == (
        "mult"
    )
