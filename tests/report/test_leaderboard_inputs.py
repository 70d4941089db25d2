"""Leaderboard files are untrusted input: schema-checked, and their text escaped when rendered."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mer_bench.errors import DataError
from mer_bench.protocol import DataSetting
from mer_bench.report.leaderboard import (
    _empty_entry,
    add_reported,
    entry_path,
    md,
    read_entry,
    render_all,
)

DATA = DataSetting.parse("synth/iid/aligned/binary")


def _write(root: Path, entry: object) -> Path:
    path = entry_path(root, DATA, "m")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"setting": ["synth", "iid", "aligned", "binary"]}, "'setting' must be an object"),
        ({"setting": {"dataset": "nope"}}, "setting"),
        ({"model": ["x"]}, "model"),
        ({"seeds": ["1111"]}, "seeds"),
        ({"modes": {"RMFM": {"auilc": {"acc3": {"mean": "high"}}}}}, "mean/sd"),
        ({"reported": [{"metrics": {}}]}, "source"),
        ({"reported": [{"source": "x", "metrics": {"acc": "1"}}]}, "numbers"),
    ],
    ids=["setting-list", "setting-bad", "model", "seeds", "stat", "no-source", "metric"],
)
def test_malformed_entries_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    entry = {**_empty_entry("m", DATA), **change}
    path = _write(tmp_path, entry)
    with pytest.raises(DataError, match=message):
        read_entry(path)
    with pytest.raises(DataError):
        render_all(tmp_path)


def test_deep_or_huge_json_is_refused(tmp_path: Path) -> None:
    path = entry_path(tmp_path, DATA, "m")
    path.parent.mkdir(parents=True)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="nested"):
        read_entry(path)


def test_html_and_markdown_in_names_and_sources_are_escaped(tmp_path: Path) -> None:
    evil = "<img src=x onerror=alert(1)>|[click](javascript:alert(1))"
    entry = _empty_entry(evil, DATA)
    entry["reported"] = [{"source": evil, "metrics": {"acc3": 0.5}}]
    _write(tmp_path, entry)
    render_all(tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert not re.search(r"(?<!\\)\]\(javascript", text) and r"\[click\]" in text
    row = next(line for line in text.splitlines() if "onerror" in line)
    assert row.count(" | ") - row.count(r"\|") <= 4  # the | in the name does not add a column


def test_md_keeps_plain_names() -> None:
    assert md("self_mm") == "self_mm" and md("pkg.mod:Class") == "pkg.mod:Class"
    assert md("a\nb") == "a b"


def test_reported_figures_file_is_validated(tmp_path: Path) -> None:
    bad = tmp_path / "reported.json"
    bad.write_text(json.dumps({"reported": [{"model": "m", "setting": ["x"], "source": "s"}]}))
    with pytest.raises(DataError, match="invalid item"):
        add_reported(tmp_path / "boards", bad)
    bad.write_text(json.dumps({"reported": {"model": "m"}}))
    with pytest.raises(DataError, match="'reported' list"):
        add_reported(tmp_path / "boards", bad)


def test_per_rate_curves_of_reported_figures_are_checked(tmp_path: Path) -> None:
    entry = _empty_entry("m", DATA)
    entry["reported"] = [{"source": "s", "per_rate": {"mode": "RMFM", "rates": {"x": {}}}}]
    with pytest.raises(DataError, match="per_rate rate 'x'"):
        read_entry(_write(tmp_path, entry))
    entry["reported"] = [
        {"source": "s", "per_rate": {"mode": "RMFM", "rates": {"0.1": {"a": "b"}}}}
    ]
    with pytest.raises(DataError, match="per_rate figures"):
        read_entry(_write(tmp_path, entry))
