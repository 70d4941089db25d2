"""The import cache: one sandboxed import per file content, memory-mapped reads afterwards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mer_bench.data import cache
from mer_bench.data.checksums import sha256_file
from mer_bench.data.loaders import load_bundle, load_file
from mer_bench.errors import DataError
from mer_bench.protocol import DataSetting, Distribution
from tests.data.fixtures import make_file, write_joblib, write_pickle


@pytest.fixture
def imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A fresh cache folder; returns the list of sources imported (appended per import)."""
    monkeypatch.setenv(cache.ENV_IMPORT_CACHE, str(tmp_path / "imports"))
    calls: list[str] = []
    real = cache.run_sandboxed

    def counting(target: str, args: list[str], *a: object, **kw: object) -> None:
        calls.append(args[0])
        real(target, args, *a, **kw)

    monkeypatch.setattr(cache, "run_sandboxed", counting)
    return calls


def test_first_use_imports_then_reads_the_cache(tmp_path: Path, imports: list[str]) -> None:
    path = write_pickle(make_file(text_dim=8), tmp_path / "f.pkl")
    first = cache.load(path)
    second = cache.load(path)
    assert len(imports) == 1
    audio = second.content["train"]["audio"]
    assert isinstance(audio, np.memmap) and audio.shape == (12, 50, 5)
    assert np.array_equal(audio, first.content["train"]["audio"])
    ids = second.content["train"]["id"]
    assert ids.dtype == object and all(isinstance(x, str) for x in ids)
    assert second.sha256 == sha256_file(path) and second.size == path.stat().st_size
    # Nothing in the folder needs code to read: .npy without pickles, and one JSON manifest.
    names = {p.name for p in second.folder.iterdir()}
    assert "manifest.json" in names and all(n.endswith(".npy") for n in names - {"manifest.json"})
    for name in names - {"manifest.json"}:
        np.load(second.folder / name, allow_pickle=False)
    manifest = json.loads((second.folder / "manifest.json").read_text())
    assert manifest["source"]["sha256"] == second.sha256


def test_changed_file_is_reimported_touched_one_is_not(tmp_path: Path, imports: list[str]) -> None:
    path = write_pickle(make_file(text_dim=None), tmp_path / "f.pkl")
    cache.load(path)
    os.utime(path, ns=(1, 1))  # same content, new mtime: re-hashed, not re-imported
    cache.load(path)
    assert len(imports) == 1
    write_pickle(make_file((5, 6, 7), text_dim=None), path)
    os.utime(path, ns=(1, 1))  # even with the old mtime the size differs
    assert cache.load(path).content["train"]["audio"].shape[0] == 5
    assert len(imports) == 2


def test_same_size_new_content_is_reimported(tmp_path: Path, imports: list[str]) -> None:
    path = write_pickle(make_file(seed=1, text_dim=None), tmp_path / "f.pkl")
    cache.load(path)
    write_pickle(make_file(seed=2, text_dim=None), path)
    os.utime(path, ns=(5, 5))
    loaded = cache.load(path).content["train"]["regression_labels"]
    assert np.array_equal(loaded, make_file(seed=2, text_dim=None)["train"]["regression_labels"])
    assert len(imports) == 2


def test_joblib_and_synth_files_go_through_the_same_import(
    tmp_path: Path, imports: list[str], tiny_synth_root: Path
) -> None:
    path = write_joblib(make_file(text_dim=None), tmp_path / "ood.pkl", compress=3)
    assert load_file(path, Distribution.OOD)["train"].size == 12
    bundle = load_bundle(DataSetting.parse("synth/iid/unaligned/binary"), tiny_synth_root)
    assert isinstance(bundle.train.vision, np.memmap)
    assert str(tiny_synth_root / "CMU-SYNTH" / "Processed" / "unaligned_50.pkl") in imports


@pytest.mark.parametrize("damage", ["file", "manifest", "array"])
def test_a_damaged_cache_is_an_error_not_a_crash(
    tmp_path: Path, imports: list[str], damage: str
) -> None:
    path = write_pickle(make_file(text_dim=None), tmp_path / "f.pkl")
    folder = cache.load(path).folder
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if damage == "file":
        manifest["tree"]["v"]["train"]["v"]["audio"]["file"] = "../../../etc/passwd"
    elif damage == "manifest":
        manifest["tree"] = {"t": "pickle", "v": "cos\nsystem\n"}
    else:
        array = manifest["tree"]["v"]["train"]["v"]["audio"]["file"]
        np.save(folder / array, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"import cache .* is damaged"):
        cache.load(path)


def test_clear_cache_removes_every_import(tmp_path: Path, imports: list[str]) -> None:
    path = write_pickle(make_file(text_dim=None), tmp_path / "f.pkl")
    folder = cache.load(path).folder
    assert cache.clear_cache() == folder.parent and not folder.exists()
    cache.load(path)
    assert len(imports) == 2


def test_unwritable_cache_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv(cache.ENV_IMPORT_CACHE, str(blocker / "imports"))
    path = write_pickle(make_file(text_dim=None), tmp_path / "f.pkl")
    with pytest.raises(DataError, match="cannot use the import cache"):
        cache.load(path)


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cache.ENV_IMPORT_CACHE, raising=False)
    monkeypatch.setenv("MER_BENCH_CACHE", "/somewhere")
    assert cache.cache_root() == Path("/somewhere/imports")
    monkeypatch.setenv(cache.ENV_IMPORT_CACHE, "/elsewhere")
    assert cache.cache_root() == Path("/elsewhere")


@pytest.mark.parametrize(
    "writer", ["pickle-2", "pickle-3", "pickle-5", "joblib", "joblib-zlib", "joblib-bz2"]
)
def test_the_import_gives_what_the_in_process_reader_gives(
    tmp_path: Path, imports: list[str], writer: str
) -> None:
    """Every kind of value survives the trip through .npy files and JSON unchanged."""
    from mer_bench.data.safe_pickle import load_untrusted

    big = np.arange(300_000, dtype=np.float32).reshape(1000, 300)  # > 1 MiB: streamed to disk
    content = {
        "train": {
            "big": big,
            "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
            "big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
            "ints": np.array([1, 2, 3], dtype=np.int64),
            "ids": np.array(["a$_$1", "b$_$2"], dtype=object),
            "unicode": np.array(["xy", "z"]),
            "empty": np.zeros((0, 5), dtype=np.float32),
            "scalar": np.float32(2.5),
            "py": [1, 2.5, "s", b"raw", None, True, (1, 2), {3, 4}],
        }
    }
    path = tmp_path / "f.pkl"
    if writer.startswith("pickle"):
        write_pickle(content, path, protocol=int(writer[-1]))
    else:
        compress = {"joblib": 0, "joblib-zlib": 3, "joblib-bz2": ("bz2", 3)}[writer]
        write_joblib(content, path, compress=compress)
    expected = load_untrusted(path)["train"]
    got = cache.load(path).content["train"]
    for key in ("big", "fortran", "big_endian", "ints", "ids", "unicode", "empty"):
        assert got[key].dtype == expected[key].dtype and got[key].dtype.isnative, key
        assert np.array_equal(got[key], expected[key]), key
    assert got["fortran"].flags.f_contiguous
    assert got["scalar"] == expected["scalar"] and type(got["scalar"]) is np.float32
    assert got["py"][:6] == [1, 2.5, "s", b"raw", None, True]
    assert list(got["py"][6]) == [1, 2] and set(got["py"][7]) == {3, 4}


def test_stale_half_written_imports_are_removed(tmp_path: Path, imports: list[str]) -> None:
    root = cache.cache_root()
    stale, recent = root / ".import-old", root / ".import-new"
    for folder in (stale, recent):
        folder.mkdir(parents=True)
    os.utime(stale, (1, 1))
    cache.load(write_pickle(make_file(text_dim=None), tmp_path / "f.pkl"))
    assert not stale.exists() and recent.exists()
