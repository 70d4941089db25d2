"""The restricted unpickler: real formats load, hostile or broken files are refused."""

from __future__ import annotations

import functools
import gzip
import io
import pickle
import subprocess
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from mer_bench.data.safe_pickle import allowed_globals, load_untrusted, load_untrusted_with_info
from mer_bench.errors import DataError
from tests.data.fixtures import (
    GlobalPayload,
    MarkerPayload,
    SystemPayload,
    hostile_wrapper_bytes,
    make_file,
    write_joblib,
    write_pickle,
)


def _content() -> dict:
    return {
        "train": {
            "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
            "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
            "ints": np.array([1, 2, 3], dtype=np.int64),
            "ids": np.array(["a$_$1", "b$_$2"], dtype=object),
            "unicode": np.array(["xy", "z"]),
            "empty": np.zeros((0, 5), dtype=np.float32),
            "scalar": np.float32(2.5),
            "py": [1, 2.5, "s", b"raw", None, True, (1, 2), {3, 4}, frozenset({5})],
        }
    }


def _assert_same(a: object, b: object) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b)
    else:
        assert a == b and type(a) is type(b)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_plain_pickle_roundtrip_every_protocol(tmp_path: Path, protocol: int) -> None:
    obj = _content()
    path = write_pickle(obj, tmp_path / "f.pkl", protocol=protocol)
    loaded, info = load_untrusted_with_info(path)
    _assert_same(obj, loaded)
    assert info.format == "pickle" and info.compression is None
    assert info.protocol == (protocol if protocol >= 2 else None)


@pytest.mark.parametrize(
    ("compress", "name"),
    [
        (0, None),
        (3, "zlib"),
        (("gzip", 3), "gzip"),
        (("bz2", 3), "bz2"),
        (("xz", 3), "xz"),
        (("lzma", 3), "lzma"),
    ],
)
def test_joblib_roundtrip_plain_and_compressed(tmp_path: Path, compress: object, name: str) -> None:
    obj = _content()
    path = write_joblib(obj, tmp_path / "f.pkl", compress=compress)
    loaded, info = load_untrusted_with_info(path)
    _assert_same(obj, loaded)
    assert info.format == "joblib" and info.compression == name


def test_joblib_real_split_with_object_arrays(tmp_path: Path) -> None:
    obj = make_file((4, 2, 3), aligned=False, neg_inf=2, text_dim=8)
    loaded = load_untrusted(write_joblib(obj, tmp_path / "ood.pkl"))
    _assert_same(obj, loaded)
    assert loaded["train"]["id"].dtype == object
    assert all(isinstance(s, str) for s in loaded["test"]["raw_text"])


class _Unseekable(io.RawIOBase):
    """A write-only stream without tell(): joblib then writes no alignment padding, as
    joblib < 1.2 never did."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:
        self.chunks.append(bytes(b))
        return len(b)

    def tell(self) -> int:
        raise io.UnsupportedOperation("tell")


def test_joblib_without_alignment_padding(tmp_path: Path) -> None:
    obj = _content()
    stream = _Unseekable()
    joblib.dump(obj, stream)
    path = tmp_path / "old.pkl"
    path.write_bytes(b"".join(stream.chunks))
    _assert_same(obj, load_untrusted(path))


def test_joblib_big_endian_arrays_come_back_native(tmp_path: Path) -> None:
    big = np.arange(6, dtype=">f4").reshape(2, 3)
    loaded = load_untrusted(write_joblib({"a": big}, tmp_path / "be.pkl"))["a"]
    assert loaded.dtype.isnative and loaded.dtype == np.float32
    assert np.array_equal(loaded, big)


def test_allow_list_is_small_and_numpy_only() -> None:
    names = allowed_globals()
    assert "joblib.numpy_pickle.NumpyArrayWrapper" in names
    assert all(
        n.startswith(("numpy.", "numpy._core.", "_codecs.", "builtins.", "joblib.")) for n in names
    )
    assert not any(
        n.endswith((".eval", ".exec", ".getattr", ".system", ".__import__")) for n in names
    )


# ----------------------------------------------------------------------------- hostile


def test_marker_payload_is_live_with_plain_pickle(tmp_path: Path) -> None:
    """Sanity check of the fixture: an unrestricted load does run the payload."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(MarkerPayload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("writer", ["pickle", "joblib"])
def test_top_level_hostile_reduce_is_refused_before_running(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    payload = {"train": MarkerPayload(marker), "valid": {}, "test": {}}
    (write_pickle if writer == "pickle" else write_joblib)(payload, path)
    with pytest.raises(
        DataError, match=r"refused to load global tests\.data\.fixtures\.write_marker"
    ):
        load_untrusted(path)
    assert not marker.exists()


@pytest.mark.parametrize("writer", ["pickle", "joblib"])
def test_os_system_payload_is_refused(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    (write_pickle if writer == "pickle" else write_joblib)({"x": SystemPayload(marker)}, path)
    with pytest.raises(DataError, match=r"refused to load global (posix|os|nt)\.system") as err:
        load_untrusted(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("writer", ["pickle", "joblib"])
def test_payload_nested_inside_a_split_dict_is_refused(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "marker"
    obj = make_file((3, 2, 2), text_dim=None)
    obj["valid"]["regression_labels"] = [MarkerPayload(marker)]
    path = tmp_path / "evil.pkl"
    (write_pickle if writer == "pickle" else write_joblib)(obj, path)
    with pytest.raises(DataError, match="write_marker"):
        load_untrusted(path)
    assert not marker.exists()


def test_payload_inside_joblib_object_array_is_refused(tmp_path: Path) -> None:
    """joblib pickles object arrays as a nested stream; the allow-list applies there too."""
    marker = tmp_path / "marker"
    obj = make_file((3, 2, 2), text_dim=None)
    obj["train"]["id"] = np.array(["ok", MarkerPayload(marker)], dtype=object)
    path = write_joblib(obj, tmp_path / "evil.pkl")
    with pytest.raises(DataError, match="write_marker"):
        load_untrusted(path)
    assert not marker.exists()


def test_hostile_joblib_wrapper_state_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(hostile_wrapper_bytes(MarkerPayload(marker)))
    with pytest.raises(DataError, match="write_marker"):
        load_untrusted(path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_joblib_wrapper_with_unexpected_fields_or_subclass_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(hostile_wrapper_bytes("harmless but unexpected"))
    with pytest.raises(DataError, match=r"malformed joblib array wrapper \(fields .*payload"):
        load_untrusted(path)
    buf = io.BytesIO()
    joblib.dump({"m": np.matrix([[1.0, 2.0]])}, buf)
    path.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match=r"refused to load global numpy\.matrix"):
        load_untrusted(path)


@pytest.mark.parametrize(
    "payload",
    [
        GlobalPayload(eval, "1 + 1"),
        GlobalPayload(getattr, "x", "upper"),
        GlobalPayload(subprocess.Popen, ["true"]),
        GlobalPayload(functools.partial, print, "x"),
        GlobalPayload(__import__, "os"),
        torch.zeros(2),
    ],
    ids=["eval", "getattr", "subprocess", "partial", "import", "torch"],
)
def test_dangerous_globals_are_refused_by_name(tmp_path: Path, payload: object) -> None:
    path = write_pickle({"train": {"x": payload}}, tmp_path / "evil.pkl")
    with pytest.raises(
        DataError, match=r"refused to load global (builtins|subprocess|functools|torch)\."
    ):
        load_untrusted(path)


def test_ndarray_cannot_be_called_directly(tmp_path: Path) -> None:
    # GLOBAL numpy.ndarray, then REDUCE with args (3,): would build an uninitialised array.
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"\x80\x02cnumpy\nndarray\nK\x03\x85R.")
    with pytest.raises(DataError, match="corrupt"):
        load_untrusted(path)


def test_structured_dtypes_are_refused(tmp_path: Path) -> None:
    arr = np.zeros(3, dtype=[("a", "f4"), ("b", "O")])
    path = write_pickle({"x": arr}, tmp_path / "s.pkl")
    with pytest.raises(DataError, match="not a plain numeric, unicode or object dtype"):
        load_untrusted(path)


# ----------------------------------------------------------------------------- broken files


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, "not a pickle file: it is a PNG image"),
        (b"hello, this is a text file\n", r"not a pickle file \(starts with b'hello, t'\)"),
        (b"PK\x03\x04" + b"\x00" * 30, "zip archive"),
        (b"\x93NUMPY\x01\x00", r"\.npy array file"),
        (b"\x80\x09garbage", "unknown pickle protocol"),
        (b"", "file is empty"),
        (b"\x04\x22\x4d\x18" + b"\x00" * 8, "lz4 is not supported"),
    ],
    ids=["png", "text", "zip", "npy", "protocol", "empty", "lz4"],
)
def test_not_a_pickle(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "f.pkl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_untrusted(path)


def test_gzip_of_a_text_file_is_not_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "f.pkl"
    path.write_bytes(gzip.compress(b"just some text"))
    with pytest.raises(DataError, match="not a pickle file"):
        load_untrusted(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot open data file"):
        load_untrusted(tmp_path / "nope.pkl")


@pytest.mark.parametrize("writer", ["pickle", "joblib", "joblib-zlib"])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.97])
def test_truncated_files_are_refused(tmp_path: Path, writer: str, fraction: float) -> None:
    obj = make_file((4, 2, 2), text_dim=8)
    path = tmp_path / "f.pkl"
    if writer == "pickle":
        write_pickle(obj, path)
    else:
        write_joblib(obj, path, compress=3 if writer.endswith("zlib") else 0)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(DataError, match=r"truncated|ends early|corrupt"):
        load_untrusted(path)


def test_joblib_array_larger_than_file_is_refused_before_allocating(tmp_path: Path) -> None:
    path = write_joblib({"a": np.zeros(1000, dtype=np.float64)}, tmp_path / "f.pkl")
    data = path.read_bytes()
    path.write_bytes(data[:-4000])
    with pytest.raises(DataError, match=r"only \d+ bytes left"):
        load_untrusted(path)
