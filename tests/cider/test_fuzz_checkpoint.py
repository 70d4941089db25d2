"""Property-based fuzzing of the checkpoint importer: a valid checkpoint's ``data.pkl`` mutated
opcode by opcode gives a state dict or one ``DataError``, never another exception or a crash."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cider.checkpoint import import_checkpoint_here
from mer_bench.errors import DataError
from tests.cider import hostile_checkpoints as hc
from tests.data.test_fuzz_pickle import mutated


def _valid(tmp: Path) -> tuple[bytes, dict[str, bytes]]:
    s = hc.StorageRef("0", 12)
    b = hc.StorageRef("1", 3, type_name="LongStorage")
    root = hc.module(
        {"weight": hc.tensor(s, (3, 4), (4, 1))},
        {"child": hc.module({"bias": hc.tensor(s, (4,), (1,), 8)}, buffers={"n": hc.tensor(b, (3,), (1,))})},
    )  # fmt: skip
    storages = {"0": hc.floats(12), "1": bytes(24)}
    path = hc.write_checkpoint(tmp / "valid.pt", root, storages)
    with zipfile.ZipFile(path) as archive:
        return archive.read("archive/data.pkl"), storages


@settings(
    max_examples=int(os.environ.get("MER_BENCH_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_checkpoints_import_or_raise_data_error(
    tmp_path: Path, data: st.DataObject
) -> None:
    pickled, storages = _valid(tmp_path)
    content = data.draw(mutated({"data.pkl": pickled}))
    path = tmp_path / "mutant.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", content)
        archive.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
    try:
        state = import_checkpoint_here(path)
    except DataError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 1000
    else:
        assert all(isinstance(name, str) for name in state)
        assert sum(t.numel() for t in state.values()) <= 3 * 15 + (1 << 20)


def test_the_fixture_checkpoint_imports(tmp_path: Path) -> None:
    _valid(tmp_path)
    state = import_checkpoint_here(tmp_path / "valid.pt")
    assert list(state) == ["weight", "child.bias", "child.n"]
    assert state["child.bias"].tolist() == [8.0, 9.0, 10.0, 11.0]
