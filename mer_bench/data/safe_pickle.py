"""Loading untrusted MMSA pickles and CIDer joblib files without running code from them.

``pickle.load`` (and ``joblib.load``, which builds on it) call whatever callable a file names,
so a downloaded data file could run arbitrary code. This module unpickles with an allow-list:

- numpy array and dtype reconstruction (``_reconstruct``, ``_frombuffer``, ``scalar``, ``dtype``,
  ``ndarray`` under both their numpy 1 and numpy 2 module names), each behind a wrapper that
  checks its arguments, plus ``_codecs.encode`` (protocol-2 pickles spell ``bytes`` with it);
- the builtin containers pickle cannot express natively under old protocols (``set``,
  ``frozenset``, ``bytearray``, ``bytes``, ``complex``);
- ``joblib.numpy_pickle.NumpyArrayWrapper``, mapped to a stand-in class of ours: joblib's own
  class is never instantiated and none of its methods run. The stand-in's state is checked and
  the raw array bytes that follow it are read here.

Every other global is refused in ``find_class``, i.e. before anything is called. State may be
set (pickle's BUILD) only on numpy dtypes, numpy arrays and the stand-in; dtypes are limited to
plain numeric, string and object kinds (no structured or void dtypes).

The unpickler is CPython's pure-Python one (the same joblib uses), because joblib's format
interleaves raw array bytes with pickle opcodes and only the pure-Python reader consumes the
stream exactly. Plain MMSA pickles go through the same reader: their arrays are few, large
byte strings, so it is no slower in practice.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import math
import os
import pickle
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from mer_bench.errors import DataError

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _np_numeric  # type: ignore[no-redef]

__all__ = ["LoadInfo", "allowed_globals", "load_untrusted", "load_untrusted_with_info"]

_ALLOWED_DTYPE_KINDS = frozenset("biufcUSO")
_JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
_JOBLIB_OLD_WRAPPERS = frozenset(
    {("joblib.numpy_pickle", "NDArrayWrapper"), ("joblib.numpy_pickle", "ZNDArrayWrapper")}
)
_READ_CHUNK = 1 << 24


@dataclass(frozen=True)
class LoadInfo:
    """How a file was stored: serialiser, compression and pickle protocol."""

    format: str
    """``pickle`` (plain pickle) or ``joblib`` (numpy arrays stored raw after joblib wrappers)."""
    compression: str | None
    """``zlib``, ``gzip``, ``bz2``, ``xz``, ``lzma`` or None."""
    protocol: int | None
    """Pickle protocol of the outer stream (None for protocols 0/1, which carry no header)."""


# ----------------------------------------------------------------------------- allow-list


class _NdarrayClass:
    """Stand-in for the ``numpy.ndarray`` global: usable only as an argument we check."""

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayClass()


def _check_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype):
        raise DataError(f"refused: expected a numpy dtype, found {type(dtype).__name__}")
    if (
        dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.kind not in (_ALLOWED_DTYPE_KINDS)
    ):
        raise DataError(
            f"refused: numpy dtype {dtype!s} is not a plain numeric, string or object dtype"
        )
    return dtype


def _safe_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    if not isinstance(spec, str) or not isinstance(align, (bool, int)):
        raise DataError(f"refused: numpy.dtype called with unexpected arguments {spec!r}")
    # Always a fresh dtype: with copy=False numpy hands out its shared builtin descriptor, and
    # the BUILD that follows would set state on that process-wide object.
    return _check_dtype(np.dtype(spec, bool(align), True))


def _safe_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    if subtype is not _NDARRAY:
        raise DataError(f"refused: numpy array reconstruction of a {subtype!r} (only ndarray)")
    return _np_multiarray._reconstruct(np.ndarray, shape, typecode)


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    _check_dtype(dtype)
    if dtype.hasobject or not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)):
        raise DataError("refused: numpy _frombuffer with an object dtype or a non-bytes buffer")
    return _np_numeric._frombuffer(buf, dtype, shape, order)


def _safe_scalar(dtype: Any, *args: Any) -> Any:
    return _np_multiarray.scalar(_check_dtype(dtype), *args)


def _safe_encode(text: Any, encoding: Any = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise DataError("refused: _codecs.encode called with unexpected arguments")
    return text.encode("latin1")


class _ArrayWrapperStub:
    """Takes the place of joblib's ``NumpyArrayWrapper`` while unpickling; never returned."""

    __slots__ = ()


_NUMPY_GLOBALS: dict[str, Any] = {
    "_reconstruct": _safe_reconstruct,
    "scalar": _safe_scalar,
    "_frombuffer": _safe_frombuffer,
    "ndarray": _NDARRAY,
    "dtype": _safe_dtype,
}

_ALLOWED: dict[tuple[str, str], Any] = {
    **{
        (module, name): _NUMPY_GLOBALS[name]
        for module, names in (
            ("numpy.core.multiarray", ("_reconstruct", "scalar", "ndarray", "dtype")),
            ("numpy._core.multiarray", ("_reconstruct", "scalar", "ndarray", "dtype")),
            ("numpy.core.numeric", ("_frombuffer",)),
            ("numpy._core.numeric", ("_frombuffer",)),
            ("numpy", ("ndarray", "dtype")),
        )
        for name in names
    },
    ("_codecs", "encode"): _safe_encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "bytes"): bytes,
    ("builtins", "complex"): complex,
}


def allowed_globals() -> tuple[str, ...]:
    """The globals a data file may name (``module.name``), for documentation and messages."""
    return tuple(sorted(f"{m}.{n}" for m, n in (*_ALLOWED, _JOBLIB_WRAPPER)))


# ----------------------------------------------------------------------------- unpickler


class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Pure-Python unpickler with an allow-list and joblib array support."""

    dispatch = pickle._Unpickler.dispatch.copy()  # type: ignore[attr-defined]

    def __init__(self, file: IO[bytes], *, remaining: Callable[[], int | None], nested: bool):
        # latin1 lets Python 2 pickles of numpy arrays load; Python 3 pickles never use it.
        super().__init__(file, encoding="latin1")
        self._file = file
        self._remaining = remaining
        self._nested = nested
        self.saw_joblib_wrapper = False

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # Python 2 spelling, what pickle's fix_imports would map
            module = "builtins"
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if key == _JOBLIB_WRAPPER:
            if self._nested:
                raise DataError(
                    "refused: a joblib array wrapper nested inside an object array's pickle"
                )
            self.saw_joblib_wrapper = True
            return _ArrayWrapperStub
        if key in _JOBLIB_OLD_WRAPPERS:
            raise DataError(
                f"refused: {module}.{name} (joblib < 0.10 format with companion files) is not "
                "supported; re-save the file with a current joblib"
            )
        raise DataError(
            f"refused to load global {module}.{name}: data files may only contain numpy "
            "arrays, dtypes, builtin containers, strings, bytes and numbers"
        )

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, _ArrayWrapperStub):
            self.stack[-1] = self._read_wrapped_array(state)
        elif isinstance(inst, np.dtype):
            inst.__setstate__(state)
            _check_dtype(inst)
        elif type(inst) is np.ndarray:
            inst.__setstate__(state)
            _check_dtype(inst.dtype)
        else:
            raise DataError(f"refused: the file sets the state of a {type(inst).__name__} object")

    dispatch[pickle.BUILD[0]] = _load_build

    def _read_wrapped_array(self, state: Any) -> np.ndarray:
        shape, order, dtype, alignment = _check_wrapper_state(state)
        frame = getattr(getattr(self, "_unframer", None), "current_frame", None)
        if frame is not None and frame.tell() != len(frame.getbuffer()):
            raise DataError("malformed joblib file: array data does not follow its wrapper")
        count = math.prod(shape)
        if dtype.hasobject:
            # joblib pickles object arrays (raw_text, id) as a nested pickle stream: read it
            # with a fresh restricted unpickler, so the allow-list applies there too.
            inner = _RestrictedUnpickler(self._file, remaining=self._remaining, nested=True)
            array = inner.load()
            if type(array) is not np.ndarray or array.dtype != dtype or array.shape != shape:
                raise DataError(
                    f"malformed joblib file: object array declared {dtype!s}{shape}, "
                    f"found {type(array).__name__}"
                )
            return array
        if alignment is not None:
            pad = _read_exact(self._file, 1)[0]
            _read_exact(self._file, pad)
        nbytes = count * dtype.itemsize
        left = self._remaining()
        if left is not None and nbytes > left:
            raise EOFError(f"array of {nbytes} bytes declared, only {left} bytes left in file")
        array = np.empty(count, dtype=dtype)
        _readinto_exact(self._file, memoryview(array).cast("B"))
        array = array.reshape(shape[::-1]).T if order == "F" else array.reshape(shape)
        if not array.dtype.isnative:
            array = array.byteswap(inplace=True).view(array.dtype.newbyteorder("="))
        return array


def _check_wrapper_state(state: Any) -> tuple[tuple[int, ...], str, np.dtype, int | None]:
    required = {"subclass", "shape", "order", "dtype"}
    optional = {"allow_mmap", "numpy_array_alignment_bytes"}
    if not isinstance(state, dict) or not required <= state.keys() <= required | optional:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise DataError(f"refused: malformed joblib array wrapper (fields {found})")
    shape, order, alignment = (
        state["shape"],
        state["order"],
        state.get("numpy_array_alignment_bytes"),
    )
    if state["subclass"] is not _NDARRAY:
        raise DataError(f"refused: joblib array wrapper of subclass {state['subclass']!r}")
    if not isinstance(shape, tuple) or not all(
        isinstance(s, (int, np.integer)) and s >= 0 for s in shape
    ):
        raise DataError(f"refused: joblib array wrapper with shape {shape!r}")
    if order not in ("C", "F") or not (
        alignment is None or (isinstance(alignment, int) and 0 < alignment <= 256)
    ):
        raise DataError(f"refused: joblib array wrapper with order {order!r} / {alignment!r}")
    return tuple(int(s) for s in shape), order, _check_dtype(state["dtype"]), alignment


def _read_exact(file: IO[bytes], n: int) -> bytes:
    data = file.read(n)
    if len(data) != n:
        raise EOFError(f"wanted {n} bytes, found {len(data)}")
    return data


def _readinto_exact(file: IO[bytes], view: memoryview) -> None:
    done, total = 0, len(view)
    while done < total:
        got = file.readinto(view[done : done + _READ_CHUNK])  # type: ignore[attr-defined]
        if not got:
            raise EOFError(f"array data ends after {done} of {total} bytes")
        done += got


# ----------------------------------------------------------------------------- containers


class _ZlibReader(io.RawIOBase):
    """Streaming reader for joblib's raw zlib compression (``compress=N`` default)."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self._decomp = zlib.decompressobj()
        self._buf = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        while self._pos >= len(self._buf):
            if self._decomp.eof:
                return 0
            chunk = self._raw.read(1 << 20)
            if not chunk:
                raise EOFError("compressed stream ends before its end marker")
            self._buf, self._pos = self._decomp.decompress(chunk), 0
        n = min(len(view), len(self._buf) - self._pos)
        view[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n


def _is_zlib(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0


_COMPRESSED: tuple[tuple[str, Callable[[bytes], bool], Callable[[IO[bytes]], IO[bytes]]], ...] = (
    ("gzip", lambda h: h.startswith(b"\x1f\x8b"), lambda f: gzip.GzipFile(fileobj=f)),
    ("bz2", lambda h: h.startswith(b"BZh"), lambda f: bz2.BZ2File(f)),
    ("xz", lambda h: h.startswith(b"\xfd7zXZ\x00"), lambda f: lzma.LZMAFile(f)),
    (
        "lzma",
        lambda h: h.startswith(b"\x5d\x00\x00"),
        lambda f: lzma.LZMAFile(f, format=lzma.FORMAT_ALONE),
    ),
    ("zlib", _is_zlib, lambda f: io.BufferedReader(_ZlibReader(f), 1 << 20)),
)

_NOT_PICKLE: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG image"),
    (b"PK\x03\x04", "a zip archive (an .npz, a torch checkpoint or similar)"),
    (b"\x93NUMPY", "a .npy array file"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x04\x22\x4d\x18", "an lz4-compressed file (lz4 is not supported; re-save uncompressed)"),
)

# Protocol 0/1 pickles have no header; a dump of a dict starts with one of these opcodes.
_OLD_PROTOCOL_START = frozenset(b"(}])")

_CORRUPT = (
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    struct.error,
    OverflowError,
    MemoryError,
    RecursionError,
    zlib.error,
    lzma.LZMAError,
)


def _sniff(path: Path, head: bytes) -> str | None:
    """Raise DataError for files that are clearly not pickles; return a compression name."""
    if not head:
        raise DataError(f"{path}: file is empty")
    for name, matches, _ in _COMPRESSED:
        if matches(head):
            return name
    for magic, what in _NOT_PICKLE:
        if head.startswith(magic):
            raise DataError(f"{path}: not a pickle file: it is {what}")
    _check_pickle_head(path, head)
    return None


def _check_pickle_head(path: Path, head: bytes) -> int | None:
    if head[0] == pickle.PROTO[0]:
        if len(head) < 2 or not 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
            raise DataError(
                f"{path}: not a pickle file (unknown pickle protocol header {head[:2]!r})"
            )
        return head[1]
    if head[0] in _OLD_PROTOCOL_START:
        return None
    raise DataError(f"{path}: not a pickle file (starts with {head[:8]!r})")


def load_untrusted_with_info(path: Path) -> tuple[Any, LoadInfo]:
    """Load a plain pickle or a joblib file (auto-detected, optionally compressed) safely.

    Raises DataError for a missing or unreadable file, a file that is not a pickle, a truncated
    or corrupt one, and for any global outside the allow-list (before it is called).
    """
    path = Path(path)
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot open data file ({exc.strerror or exc})") from None
    stream: IO[bytes] = raw
    try:
        head = raw.read(16)
        raw.seek(0)
        compression = _sniff(path, head)
        if compression is None:
            protocol = _check_pickle_head(path, head)
            remaining = _bytes_left(raw, os.fstat(raw.fileno()).st_size)
        else:
            opener = next(op for name, _, op in _COMPRESSED if name == compression)
            stream = opener(raw)
            inner_head = stream.peek(16)[:16]  # type: ignore[attr-defined]
            protocol = _check_pickle_head(path, inner_head) if len(inner_head) >= 2 else None
            remaining = _unknown_left
        unpickler = _RestrictedUnpickler(stream, remaining=remaining, nested=False)
        try:
            obj = unpickler.load()
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
        except EOFError as exc:
            raise DataError(f"{path}: file ends early: truncated or corrupt ({exc})") from None
        except (OSError, *_CORRUPT) as exc:
            raise DataError(
                f"{path}: corrupt or not an MMSA data pickle ({type(exc).__name__}: {exc})"
            ) from None
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        # Raised while sniffing a compressed stream's first bytes.
        raise DataError(f"{path}: corrupt compressed file ({exc})") from None
    finally:
        if stream is not raw:
            stream.close()
        raw.close()
    fmt = "joblib" if unpickler.saw_joblib_wrapper else "pickle"
    return obj, LoadInfo(format=fmt, compression=compression, protocol=protocol)


def _bytes_left(file: IO[bytes], size: int) -> Callable[[], int | None]:
    return lambda: size - file.tell()


def _unknown_left() -> int | None:
    return None


def load_untrusted(path: Path) -> Any:
    """Safely load an untrusted data file (plain pickle or joblib, auto-detected)."""
    return load_untrusted_with_info(path)[0]
