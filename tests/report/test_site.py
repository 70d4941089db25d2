"""The results site without a browser: content, escaping, consistency with ``table``, CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mer_bench.cli import main
from mer_bench.report.data import Predictions, load_frame
from mer_bench.report.site import SiteOptions, build_site, model_size
from mer_bench.report.tables import TableOptions, build_tables, tables_frame
from mer_bench.store import ResultsStore
from tests.conftest import ROOT
from tests.report.helpers import write_store

FAST = {"n_resamples": 999, "n_boot": 100, "n_boot_curves": 50}
HOSTILE = '<img src=x onerror="window.__xss=1">"</script>&amp;'
PAGE = "settings/synth-iid-aligned-binary.html"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def site(store_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build_site(SiteOptions(results=(store_dir,), **FAST), out)
    return out


def hostile_leaderboards(folder: Path) -> Path:
    """A copy of one committed setting whose model, source and regime are hostile text."""
    src = ROOT / "leaderboards" / "synth" / "iid-aligned-binary"
    dst = folder / "synth" / "iid-aligned-binary"
    dst.mkdir(parents=True)
    for path in src.glob("*.json"):
        shutil.copy(path, dst / path.name)
    entry = json.loads((src / "mult.json").read_text())
    entry["model"] = HOSTILE
    entry["regime"] = "<b>finetune</b>"
    entry["reported"] = [{"source": HOSTILE, "metrics": {"non0_acc2": 0.5}}]
    (dst / "hostile.json").write_text(json.dumps(entry))
    return folder


def test_significance_marks_match_table(site, store_dir) -> None:
    """The page's marks and its CSV come from the same tests and Holm correction as `table`."""
    with ResultsStore(store_dir, create=False) as store:
        tables = build_tables(
            load_frame(store),
            Predictions(store),
            TableOptions(n_resamples=FAST["n_resamples"], n_boot=FAST["n_boot"]),
        )
    expected = tables_frame(tables)
    expected = expected[expected["model"] != expected["baseline"]]
    # the page's curve table holds the rates and the AUILC; RR/ER live in the significance CSV
    expected = expected[~expected["column"].isin(["RR", "ER"])]
    assert {"better", ""} <= set(expected["significant"])  # both outcomes are exercised
    shown = pd.read_csv(site / "data" / "synth-iid-aligned-binary.csv", keep_default_na=False)
    merged = expected.merge(
        shown[shown["source"] == "results"],
        on=["model", "mode", "column", "metric"],
        suffixes=("_table", "_site"),
    )
    assert len(merged) == len(expected)
    assert list(merged["significant_table"]) == list(merged["significant_site"])
    assert merged["mean_site"].astype(float).tolist() == pytest.approx(
        merged["mean_table"].tolist(), abs=1e-6
    )
    sig = pd.read_csv(site / "data" / "synth-iid-aligned-binary-significance.csv")
    assert len(sig) == len(tables_frame(tables))
    html = (site / PAGE).read_text()
    # good beats base at every rate: its AUILC cell carries the ↑; same (identical) never does
    rows = re.findall(r'<tr class="measured">.*?</tr>', html)
    (good,) = [r for r in rows if ">good</a>" in r]
    (same,) = [r for r in rows if ">same</a>" in r]
    assert 'class="sig better"' in good
    (base,) = [r for r in rows if ">base</a>" in r]
    assert "(baseline)" in base and "(baseline)" not in good
    assert "↑" not in same and "↓" not in same
    assert 'id="significance"' in html


def test_curves_carry_bands_and_per_seed_values(site) -> None:
    html = (site / PAGE).read_text()
    payload = json.loads(
        re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html, re.S)
        .group(1)
        .replace("\\u003c", "<")
    )
    assert payload["modes"] == ["RMFM"]
    assert {s["name"] for s in payload["series"]} == {"base", "good", "same"}
    points = payload["series"][0]["curves"]["RMFM"][payload["default_metric"]]
    assert [p["rate"] for p in points] == [round(k / 10, 1) for k in range(11)]
    for p in points:
        assert p["ci"][0] <= p["mean"] <= p["ci"][1] or p["ci"][0] == p["ci"][1]
        assert [s for s, _ in p["per_seed"]] == [1111, 1112, 1113]
    assert len(payload["smm"]["series"]) == 3
    assert (site / "assets" / "plotly-cartesian.min.js").stat().st_size > 500_000
    # nothing is fetched from elsewhere
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), page


def test_model_page_has_sizes_cells_and_presets(tmp_path, capsys) -> None:
    boards = hostile_leaderboards(tmp_path / "boards")
    for other in ("cider", "self_mm"):  # one real model keeps the builds few
        (boards / "synth" / "iid-aligned-binary" / f"{other}.json").unlink()
    out = tmp_path / "site"
    build_site(SiteOptions(leaderboards=boards, significance=False), out)
    page = (out / "models" / "mult.html").read_text()
    assert "presets" in page and "binary" in page
    # parameter counts as `describe` prints them for the same setting and preset
    assert (
        main(
            ["describe", "mult", "--dataset", "synth", "--alignment", "aligned", "--task", "binary"]
        )
        == 0
    )
    described = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    size = model_size("mult", "synth/iid/aligned/binary")
    assert size.parameters == int(described["non_bert_parameters"])
    assert size.text_encoder == int(described["bert_parameters"])
    assert f"{size.parameters:,}" in page and f"preset {described['preset']}" in page
    assert "synth/iid/aligned/binary/RMFM@0.3" in page
    assert "synth/iid/aligned/binary/SMM[TA]" in page


def test_text_from_files_is_escaped_and_extra_columns_render(tmp_path) -> None:
    boards = hostile_leaderboards(tmp_path / "boards")
    out = tmp_path / "site"
    build_site(SiteOptions(leaderboards=boards, significance=False, model_sizes=False), out)
    for page in out.rglob("*.html"):
        text = page.read_text()
        assert "<img" not in text and "<b>finetune" not in text, page
        # the data block cannot be closed early: its only </script> is its own end
        for block in re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', text, re.S):
            assert "<" not in block
    html = (out / PAGE).read_text()
    assert "&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;" in html
    # a column the renderer does not know (a future training regime) becomes a filterable column
    assert '<th data-col="regime"' in html and '<select data-filter="regime">' in html
    assert "&lt;b&gt;finetune&lt;/b&gt;" in html
    # reported figures sit in their own, labelled body
    assert '<tbody class="reported"><tr class="group">' in html


def test_cli_site(tmp_path, store_dir, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["site", "--help"])
    assert info.value.code == 0 and "--leaderboards" in capsys.readouterr().out
    out = tmp_path / "site"
    argv = ["site", "--results", str(store_dir), "--leaderboards", "none", "--out", str(out)]
    assert main([*argv, "--no-significance", "--no-model-sizes", "--curve-bootstrap", "20"]) == 0
    assert (out / "index.html").is_file() and (out / "data" / "results-1-metrics.csv").is_file()
    assert not (out / "data" / "synth-iid-aligned-binary-significance.csv").exists()
    capsys.readouterr()
    assert main(["site", "--leaderboards", "none", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert main(["site", "--results", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert main([*argv, "--alpha", "2"]) == 2
