"""Property-based fuzzing: valid fixture files mutated opcode by opcode.

Whatever the mutation, reading a file either gives data the schema then accepts or refuses,
or a ``DataError``: never another exception, a crash, a hang or a payload. The same holds end
to end through ``data check`` (one ``error:`` line and exit 2, or exit 0).
"""

from __future__ import annotations

import functools
import os
import pickle
import pickletools
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mer_bench.data.safe_pickle import load_untrusted
from mer_bench.data.schema import inspect_file
from mer_bench.errors import DataError
from mer_bench.protocol import Distribution
from tests.conftest import ROOT, subprocess_env
from tests.data.fixtures import make_file, write_joblib

_OPCODES = sorted({op.code.encode("latin1")[0] for op in pickletools.opcodes})
_EXTREMES = (0, 1, 255, 1 << 31, (1 << 32) - 1, 1 << 62, (1 << 64) - 1)


@functools.cache
def _fixtures(tmp: str) -> dict[str, bytes]:
    obj = make_file((3, 2, 2), text_dim=4)
    out = {f"pickle-{p}": pickle.dumps(obj, protocol=p) for p in (2, 4, 5)}
    path = write_joblib(obj, Path(tmp) / "fixture.joblib")
    out["joblib"] = path.read_bytes()
    return out


def _boundaries(data: bytes) -> list[int]:
    """Start offsets of the opcodes of the (first) pickle stream, plus its end."""
    starts = []
    try:
        for _, _, pos in pickletools.genops(data):
            starts.append(pos)
    except (ValueError, TypeError):  # joblib: raw array bytes follow a wrapper
        pass
    return starts or [0]


@st.composite
def mutated(draw: st.DrawFn, fixtures: dict[str, bytes]) -> bytes:
    data = bytearray(fixtures[draw(st.sampled_from(sorted(fixtures)))])
    for _ in range(draw(st.integers(1, 3))):
        starts = _boundaries(bytes(data))
        i = draw(st.integers(0, len(starts) - 1))
        start = starts[i]
        end = starts[i + 1] if i + 1 < len(starts) else min(len(data), start + 1)
        kind = draw(
            st.sampled_from(["delete", "duplicate", "opcode", "argument", "insert", "truncate", "extreme"])
        )  # fmt: skip
        if kind == "delete":
            del data[start:end]
        elif kind == "duplicate":
            data[end:end] = data[start:end]
        elif kind == "opcode" and start < len(data):
            data[start] = draw(st.sampled_from(_OPCODES))
        elif kind == "argument" and end - start > 1:
            arg = draw(st.binary(min_size=end - start - 1, max_size=end - start - 1))
            data[start + 1 : end] = arg
        elif kind == "insert":
            data[start:start] = draw(st.binary(min_size=1, max_size=12))
        elif kind == "truncate":
            del data[start:]
        elif kind == "extreme" and end - start > 1:
            width = min(8, end - start - 1)
            value = draw(st.sampled_from(_EXTREMES)) % (1 << (8 * width))
            data[start + 1 : start + 1 + width] = value.to_bytes(width, "little")
    return bytes(data)


def _load_and_validate(path: Path) -> None:
    try:
        raw = load_untrusted(path)
        inspect_file(raw, path, kind=Distribution.IID, allow_nonfinite=True)
    except DataError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 1000


@settings(
    max_examples=int(os.environ.get("MER_BENCH_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pickletools on mangled escapes
def test_mutated_files_load_or_raise_data_error(tmp_path: Path, data: st.DataObject) -> None:
    content = data.draw(mutated(_fixtures(str(tmp_path))))
    path = tmp_path / "mutant.pkl"
    path.write_bytes(content)
    _load_and_validate(path)


def test_the_fixtures_themselves_load(tmp_path: Path) -> None:
    for name, content in _fixtures(str(tmp_path)).items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(content)
        raw = load_untrusted(path)
        assert inspect_file(raw, path, kind=Distribution.IID).splits["train"].size == 3


@pytest.mark.slow
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_files_through_data_check(tmp_path: Path, data: st.DataObject) -> None:
    content = data.draw(mutated(_fixtures(str(tmp_path))))
    path = tmp_path / "mutant.pkl"
    path.write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "mer_bench", "data", "check", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=subprocess_env(MER_BENCH_IMPORT_CACHE=str(tmp_path / "cache")),
        timeout=120,
    )
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 2), proc.stderr[-2000:]
    if proc.returncode == 2:
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
