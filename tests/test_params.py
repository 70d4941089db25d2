"""User-supplied settings: ``--params`` files and ``--set`` values are validated, not trusted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mer_bench.adapters import _coerce
from mer_bench.cli._common import overrides as _overrides
from mer_bench.errors import ConfigError
from mer_bench.params import parse_set_value, read_params_file
from tests.conftest import ROOT, subprocess_env


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 50_000 + "]" * 50_000, "nested more than"),
        ('{"lr": ' + "9" * 5000 + "}", "5000 digits"),
        ('{"lr": 1e400}', "not finite"),
        ('{"lr": NaN}', "non-finite number NaN"),
        ('{"lr": -Infinity}', "non-finite number -Infinity"),
        ('{"params": [1, 2]}', "'params' must be a JSON object"),
        ('{"model": 3}', "'model' must be a string"),
        ('{"a b": 1}', "invalid parameter name"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"lr": 0.1', "not valid JSON"),
    ],
    ids=["deep", "bigint", "overflow", "nan", "inf", "params-list", "model", "name", "list", "bad"],
)
def test_hostile_params_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        read_params_file(path)
    assert len(str(err.value)) < 300 and "\n" not in str(err.value)


def test_valid_params_and_tune_exports_load(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    record = {"model": "mult", "params": {"lr": 0.001, "layers": 4}, "rates": {"0.0": 1.0}}
    path.write_text(json.dumps(record))
    assert read_params_file(path) == record
    assert _overrides([], str(path), ["mult"])["mult"] == {"lr": 0.001, "layers": 4}


def test_params_must_be_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        read_params_file(tmp_path)
    with pytest.raises(ConfigError, match="larger than"):
        big = tmp_path / "big.json"
        big.write_text('{"x": "' + "a" * (2 << 20) + '"}')
        read_params_file(big)


@pytest.mark.parametrize("text", ["NaN", "1e400", "-Infinity", "9" * 40, "[" * 40 + "]" * 40])
def test_set_values_that_break_a_rule_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_set_value(text)


def test_set_values_parse_as_json_or_text() -> None:
    assert parse_set_value("0.5") == 0.5
    assert parse_set_value("[1,2]") == [1, 2]
    assert parse_set_value("adam") == "adam"
    assert _overrides(["lr=0.01,layers=2"], None, ["m"])["m"] == {"lr": 0.01, "layers": 2}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", float("nan")])
def test_non_finite_hyperparameters_are_refused_when_coerced(value: object) -> None:
    with pytest.raises(ConfigError, match="finite"):
        _coerce("lr", value, 1e-3)


def test_coerce_message_is_short() -> None:
    with pytest.raises(ConfigError) as err:
        _coerce("layers", "x" * 10_000, 3)
    assert len(str(err.value)) < 200


@pytest.mark.parametrize(
    "content", ['{"lr": NaN}', "[" * 100_000 + "]" * 100_000], ids=["nan", "deep"]
)
def test_run_with_hostile_params_prints_one_error_line(tmp_path: Path, content: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "mer_bench", "run", "--models", "mult", "--params", str(path),
         "--protocol", "distribution=iid,alignment=aligned,task=binary,mode=RMFM,rate=0.0",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, env=subprocess_env(), timeout=240,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --params"), proc.stderr[-2000:]
