"""Reading untrusted MMSA pickles and CIDer joblib files without running code from them.

``pickle.load`` (and ``joblib.load``) call whatever callable a file names, and even numpy's own
reconstruction functions trust the state they are given (a dtype state can claim an object
dtype, after which raw file bytes are read as object pointers). So nothing numpy or pickle
offers is called with file content here. The reader is CPython's pure-Python unpickler (the one
joblib uses: joblib interleaves raw array bytes with pickle opcodes) with these changes:

- Globals come from a short allow-list (numpy's array/dtype/scalar reconstruction names, joblib's
  array wrapper, a few builtins). Each resolves to a function or marker of ours that checks its
  arguments and returns an inert placeholder; numpy and joblib code never runs.
- A dtype is rebuilt from an allow-list of plain kinds (bool, ints, unsigned, floats, complex,
  fixed-width unicode, and object for ids/raw text) and only if the file's whole dtype state
  equals the state numpy itself writes for that dtype and byte order.
- Arrays are plain numbers over bytes we read (``numpy.frombuffer`` with a checked numeric
  dtype and a size that matches), or are streamed straight into ``.npy`` files when importing
  into the cache (``mer_bench.data.cache``). Object arrays are never numpy object buffers from the file: their
  items come from the pickle as Python values and must be ``str``, ``int``, ``float``, ``bool``
  or ``None``.
- Every read is bounded by what the stream can hold (``mer_bench.data.streams``): the bytes
  left in an uncompressed file, or for a compressed one ``MAX_EXPANSION`` times its size. A
  declared length or array size beyond that is refused before anything is allocated.
- Dict keys must be ``str`` and set items plain scalars, so no file-built tuple is ever hashed;
  the result is walked iteratively with a depth and node budget (shared sub-structures cannot
  multiply into an exponential tree); error messages quote at most ~80 characters and never call
  ``repr`` on file content; only regular files are opened (no FIFOs or devices).

``load_untrusted`` returns plain Python objects with numpy arrays (in this process; used for
small files and tests). ``import_to_folder`` writes the same content as ``.npy`` files plus a JSON
tree; runs call it in a resource-limited child process (``mer_bench.data.sandbox``).
"""

from __future__ import annotations

import base64
import io
import json
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

from mer_bench.data.restricted_pickle import RestrictedUnpickler, quote
from mer_bench.data.streams import (
    CHUNK,
    COMPRESSED,
    MAX_EXPANSION,
    Bounded,
    HashingReader,
    check_pickle_head,
    open_regular,
    sniff,
)
from mer_bench.errors import DataError

__all__ = [
    "MANIFEST",
    "MAX_EXPANSION",
    "LoadInfo",
    "allowed_globals",
    "import_to_folder",
    "load_untrusted",
    "load_untrusted_with_info",
    "open_regular",
    "quote",
]

MAX_DEPTH = 64
"""Nesting depth of containers in a data file (MMSA files nest 3 deep)."""
MAX_NDIM = 16
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_BLOB_MIN = 1 << 20
"""Byte strings at least this long, outside a pickle frame, go to disk when importing."""
_NPY_HEADER = 4096
"""Bytes reserved for the ``.npy`` header of arrays streamed before their shape is known."""

_NUMERIC_DESCRS = frozenset(
    {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"}
)
_OBJECT_DESCR = "O8"
_MAX_UNICODE_WIDTH = 1 << 16
_ATOMS = (str, int, float, bool, type(None))
_HASHABLE_ATOMS = (str, bytes, int, float, bool, complex, type(None))
_JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
_JOBLIB_OLD_WRAPPERS = frozenset(
    {("joblib.numpy_pickle", "NDArrayWrapper"), ("joblib.numpy_pickle", "ZNDArrayWrapper")}
)


@dataclass(frozen=True)
class LoadInfo:
    """How a file was stored: serialiser, compression and pickle protocol."""

    format: str
    """``pickle`` (plain pickle) or ``joblib`` (numpy arrays stored raw after joblib wrappers)."""
    compression: str | None
    """``zlib``, ``gzip``, ``bz2``, ``xz``, ``lzma`` or None."""
    protocol: int | None
    """Pickle protocol of the outer stream (None for protocols 0/1, which carry no header)."""


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[:limit] + "…"


# ----------------------------------------------------------------------------- placeholders


class _NdarrayMarker:
    """What the global ``numpy.ndarray`` resolves to: usable only as an argument we check."""

    __slots__ = ()


_NDARRAY = _NdarrayMarker()


class _DtypeProto:
    """A dtype named by the file; ``dtype`` is set once its BUILD state has been checked."""

    __slots__ = ("descr", "dtype")

    def __init__(self, descr: str) -> None:
        self.descr = descr
        self.dtype: np.dtype | None = None


class _ArrayProto:
    """An array named by the file; ``value`` is set once its data has been read."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Any = None


@dataclass(frozen=True)
class _ObjectArray:
    """An object array's items (checked to be plain scalars) and shape."""

    items: list
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _Stored:
    """An array written to ``file`` in the import folder."""

    file: str


class _Blob:
    """A long byte string that was streamed to a file instead of memory (imports only)."""

    __slots__ = ("path", "size", "used")

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size, self.used = path, size, False


class _WrapperStub:
    """Takes the place of joblib's ``NumpyArrayWrapper``; joblib's class is never used."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: _ArrayProto | None = None


# ----------------------------------------------------------------------------- allowed globals


def _dtype_of(value: Any) -> np.dtype:
    if not isinstance(value, _DtypeProto) or value.dtype is None:
        raise DataError(f"refused: expected a checked numpy dtype, found {quote(value)}")
    return value.dtype


def _make_dtype(descr: Any, align: Any = False, copy: Any = True) -> _DtypeProto:
    if (
        not isinstance(descr, str)
        or type(align) not in (bool, int)
        or type(copy)
        not in (
            bool,
            int,
        )
    ):
        raise DataError("refused: numpy dtype named with unexpected arguments")
    ok = descr in _NUMERIC_DESCRS or descr == _OBJECT_DESCR
    if descr.startswith("U") and descr[1:].isdigit() and len(descr) <= 8:
        ok = 0 < int(descr[1:]) <= _MAX_UNICODE_WIDTH
    if not ok or align:
        raise DataError(
            f"refused: numpy dtype {quote(descr)} is not a plain numeric, unicode or object dtype"
        )
    return _DtypeProto(descr)


def _canonical_dtype(proto: _DtypeProto, state: Any) -> np.dtype:
    """The dtype whose pickled state equals ``state`` exactly, else DataError."""
    if not isinstance(state, tuple) or not all(type(s) in (int, str, type(None)) for s in state):
        raise DataError(f"refused: numpy dtype {proto.descr} with a malformed state")
    base = np.dtype(proto.descr)
    for order in ("<", ">", "|"):
        try:
            candidate = base.newbyteorder(order) if order != "|" else base
        except ValueError:
            continue
        if candidate.__reduce__()[2] == state:
            return candidate
    raise DataError(
        f"refused: numpy dtype {proto.descr} with a state numpy would not write for it "
        "(flags, sizes or fields altered)"
    )


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _ArrayProto:
    if subtype is not _NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        raise DataError("refused: numpy array reconstruction other than a plain ndarray")
    return _ArrayProto()


def _check_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > MAX_NDIM:
        raise DataError(f"refused: array shape {quote(shape)}")
    if not all(type(s) is int and 0 <= s < (1 << 62) for s in shape):
        raise DataError("refused: array shape with a negative, huge or non-integer size")
    return shape


def _scalar(dtype: Any, *args: Any) -> Any:
    dt = _dtype_of(dtype)
    if dt.hasobject or len(args) != 1 or not isinstance(args[0], (bytes, str)):
        raise DataError("refused: numpy scalar other than a plain numeric one")
    data = args[0].encode("latin1") if isinstance(args[0], str) else args[0]
    if len(data) != dt.itemsize:
        raise DataError("refused: numpy scalar with the wrong number of bytes")
    return np.frombuffer(data, dtype=dt)[0].astype(dt.newbyteorder("="))


def _encode(text: Any, encoding: Any = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise DataError("refused: _codecs.encode called with unexpected arguments")
    return text.encode("latin1")


def _bytes(*args: Any) -> bytes:
    if args and not (len(args) == 1 and isinstance(args[0], (bytes, bytearray))):
        raise DataError("refused: bytes() called with unexpected arguments")
    return bytes(args[0]) if args else b""


def _bytearray(*args: Any) -> bytearray:
    if args and not (len(args) == 1 and isinstance(args[0], (bytes, bytearray))):
        raise DataError("refused: bytearray() called with unexpected arguments")
    return bytearray(args[0]) if args else bytearray()


def _complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    if type(real) not in (int, float) or type(imag) not in (int, float):
        raise DataError("refused: complex() called with unexpected arguments")
    return complex(real, imag)


def _plain_item(item: Any) -> Any:
    if type(item) not in _HASHABLE_ATOMS:
        raise DataError(f"refused: a set item that is {quote(item)} (only plain scalars)")
    return item


def _plain_items(items: Any) -> list:
    if not isinstance(items, (list, tuple)):
        raise DataError(f"refused: a set built from {quote(items)}")
    return [_plain_item(item) for item in items]


def _set(items: Any = ()) -> set:
    return set(_plain_items(items))


def _frozenset(items: Any = ()) -> frozenset:
    return frozenset(_plain_items(items))


_ARRAY_GLOBALS: dict[str, Any] = {
    "_reconstruct": _reconstruct,
    "scalar": _scalar,
    "ndarray": _NDARRAY,
    "dtype": _make_dtype,
}

_ALLOWED: dict[tuple[str, str], Any] = {
    **{
        (module, name): _ARRAY_GLOBALS[name]
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in _ARRAY_GLOBALS
    },
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _make_dtype,
    ("_codecs", "encode"): _encode,
    ("builtins", "set"): _set,
    ("builtins", "frozenset"): _frozenset,
    ("builtins", "bytearray"): _bytearray,
    ("builtins", "bytes"): _bytes,
    ("builtins", "complex"): _complex,
}
_FROMBUFFER = frozenset(
    {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}
)


def allowed_globals() -> tuple[str, ...]:
    """The globals a data file may name (``module.name``), for documentation and messages."""
    names = (*_ALLOWED, *_FROMBUFFER, _JOBLIB_WRAPPER)
    return tuple(sorted(f"{m}.{n}" for m, n in names))


# ----------------------------------------------------------------------------- array sinks


def _npy_header(dtype: np.dtype, shape: tuple[int, ...], fortran: bool, size: int) -> bytes:
    """A version 1.0 ``.npy`` header padded to ``size`` bytes."""
    text = repr({"descr": dtype.str, "fortran_order": fortran, "shape": shape})
    body_len = size - 10
    if len(text) + 1 > body_len:
        raise DataError("refused: array header too long")
    body = (text + " " * (body_len - len(text) - 1) + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", body_len) + body


class _MemorySink:
    """Builds numpy arrays in this process (copies of the bytes read)."""

    streams_blobs = False

    def from_bytes(
        self, dtype: np.dtype, shape: tuple[int, ...], fortran: bool, data: Any
    ) -> np.ndarray:
        flat = np.frombuffer(data, dtype=dtype) if len(data) else np.empty(0, dtype=dtype)
        array = flat.reshape(shape, order="F" if fortran else "C")
        if dtype.isnative:
            return array  # a read-only view of the bytes read: no second copy
        return array.astype(dtype.newbyteorder("="), order="K")

    def from_stream(
        self, dtype: np.dtype, shape: tuple[int, ...], fortran: bool, stream: Bounded, nbytes: int
    ) -> np.ndarray:
        flat = np.empty(nbytes // max(1, dtype.itemsize), dtype=dtype)
        stream.readinto_exact(memoryview(flat).cast("B"))
        array = flat.reshape(shape, order="F" if fortran else "C")
        if not dtype.isnative:
            array = array.byteswap().view(dtype.newbyteorder("="))
        return array

    def blob(self, stream: Bounded, nbytes: int) -> Any:  # pragma: no cover - not called
        raise AssertionError


class _FolderSink:
    """Writes arrays as ``.npy`` files into an import folder, never holding them in memory."""

    streams_blobs = True

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def _next(self, prefix: str) -> tuple[str, Path]:
        self.count += 1
        name = f"{prefix}{self.count:05d}.npy"
        return name, self.folder / name

    def from_bytes(
        self, dtype: np.dtype, shape: tuple[int, ...], fortran: bool, data: Any
    ) -> _Stored:
        name, path = self._next("a")
        header = _npy_header(dtype, shape, fortran, _NPY_HEADER)
        if isinstance(data, _Blob):
            if data.used:
                raise DataError("refused: one byte string used as the data of two arrays")
            data.used = True
            with open(data.path, "r+b") as fh:
                fh.write(header)
            os.replace(data.path, path)
        else:
            with open(path, "wb") as fh:
                fh.write(header)
                fh.write(data)
        return _Stored(name)

    def from_stream(
        self, dtype: np.dtype, shape: tuple[int, ...], fortran: bool, stream: Bounded, nbytes: int
    ) -> _Stored:
        name, path = self._next("a")
        with open(path, "wb") as fh:
            fh.write(_npy_header(dtype, shape, fortran, _NPY_HEADER))
            stream.copy_to(fh, nbytes)
        return _Stored(name)

    def blob(self, stream: Bounded, nbytes: int) -> _Blob:
        _, path = self._next("blob")
        with open(path, "wb") as fh:
            fh.write(b"\x00" * _NPY_HEADER)
            stream.copy_to(fh, nbytes)
        return _Blob(path, nbytes)


_CORRUPT = (
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    struct.error,
    OverflowError,
    RecursionError,
    zlib.error,
    lzma.LZMAError,
)


# ----------------------------------------------------------------------------- unpickler


class _RestrictedUnpickler(RestrictedUnpickler):
    """Pure-Python unpickler with an allow-list, checked containers and joblib array support.

    Containers (``mer_bench.data.restricted_pickle``): dict keys must be ``str``, set items
    plain scalars (nothing file-built is hashed); items go only onto plain dicts, lists and
    sets. Persistent ids and ``NEWOBJ_EX`` are refused too (data files never hold them).
    """

    dispatch = RestrictedUnpickler.dispatch.copy()
    refused_opcodes = (*RestrictedUnpickler.refused_opcodes, "PERSID", "BINPERSID", "NEWOBJ_EX")

    def __init__(self, stream: Bounded, sink: _MemorySink | _FolderSink, *, nested: bool):
        # latin1 lets Python 2 pickles of numpy arrays load; Python 3 pickles never use it.
        super().__init__(stream, encoding="latin1")
        self._stream = stream
        self._sink = sink
        self._nested = nested
        self.saw_joblib_wrapper = False

    def find_class(self, module: str, name: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise DataError("refused: a global named by something other than text")
        if module == "__builtin__":  # Python 2 spelling, what pickle's fix_imports would map
            module = "builtins"
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if key in _FROMBUFFER:
            return self._frombuffer
        if key == _JOBLIB_WRAPPER:
            if self._nested:
                raise DataError(
                    "refused: a joblib array wrapper nested inside an object array's pickle"
                )
            self.saw_joblib_wrapper = True
            return _WrapperStub
        if key in _JOBLIB_OLD_WRAPPERS:
            raise DataError(
                f"refused: {module}.{name} (joblib < 0.10 format with companion files) is not "
                "supported; re-save the file with a current joblib"
            )
        raise DataError(
            f"refused to load global {_short(module, 80)}.{_short(name, 80)}: data files may "
            "only contain numpy arrays, dtypes, builtin containers, strings, bytes and numbers"
        )

    # --- byte strings: long ones outside a frame stream to disk when importing

    def _in_frame(self) -> bool:
        frame = getattr(getattr(self, "_unframer", None), "current_frame", None)
        return frame is not None and frame.tell() < len(frame.getbuffer())

    def _byte_string(self, n: int) -> Any:
        if self._sink.streams_blobs and n >= _BLOB_MIN and not self._in_frame():
            return self._sink.blob(self._stream, n)
        return super()._byte_string(n)

    def _load_binbytes(self) -> None:
        (n,) = struct.unpack("<I", self.read(4))
        self.append(self._byte_string(n))

    def _load_binbytes8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        self.append(self._byte_string(n))

    dispatch[pickle.BINBYTES[0]] = _load_binbytes
    dispatch[pickle.BINBYTES8[0]] = _load_binbytes8

    # --- containers: str keys only, plain set items (nothing file-built is hashed)

    def _key(self, key: Any) -> str:
        if type(key) is not str:
            raise DataError(f"refused: a dict key that is {quote(key)} (keys must be str)")
        return key

    def _set_item(self, item: Any) -> Any:
        return _plain_item(item)

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls is not _WrapperStub or args != ():
            raise DataError("refused: object construction other than joblib's array wrapper")
        self.append(_WrapperStub())

    dispatch[pickle.NEWOBJ[0]] = _load_newobj

    # --- BUILD: only on dtypes, arrays and joblib wrappers, each checked

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, _DtypeProto) and inst.dtype is None:
            inst.dtype = _canonical_dtype(inst, state)
        elif isinstance(inst, _ArrayProto) and inst.value is None:
            inst.value = self._array_from_state(state)
        elif isinstance(inst, _WrapperStub) and inst.array is None:
            inst.array = self._read_wrapped_array(state)
            self.stack[-1] = inst.array
        else:
            raise DataError(f"refused: the file sets the state of {quote(inst)}")

    dispatch[pickle.BUILD[0]] = _load_build

    def _array_from_state(self, state: Any) -> Any:
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise DataError("refused: malformed numpy array state")
        shape, dtype, fortran, data = state
        shape, dt = _check_shape(shape), _dtype_of(dtype)
        if type(fortran) not in (bool, int) or fortran not in (0, 1):
            raise DataError("refused: malformed numpy array order flag")
        count = math.prod(shape)
        if dt.hasobject:
            if type(data) is not list or len(data) != count:
                raise DataError("refused: object array whose items do not match its shape")
            return _object_array(data, shape, fortran=bool(fortran))
        return self._numeric(dt, shape, bool(fortran), data)

    def _numeric(self, dt: np.dtype, shape: tuple[int, ...], fortran: bool, data: Any) -> Any:
        if isinstance(data, str):
            data = data.encode("latin1")  # Python 2 pickles store array bytes as text
        size = data.size if isinstance(data, _Blob) else len(data)
        if (
            not isinstance(data, (bytes, bytearray, _Blob))
            or size != math.prod(shape) * dt.itemsize
        ):
            raise DataError(
                f"refused: array {dt.str}{list(shape)} with {size} data bytes "
                f"(expects {math.prod(shape) * dt.itemsize})"
            )
        return self._sink.from_bytes(dt, shape, fortran, data)

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any) -> _ArrayProto:
        dt, shape = _dtype_of(dtype), _check_shape(shape)
        if dt.hasobject or order not in ("C", "F"):
            raise DataError("refused: numpy _frombuffer with an object dtype or unknown order")
        proto = _ArrayProto()
        proto.value = self._numeric(dt, shape, order == "F", buf)
        return proto

    def _read_wrapped_array(self, state: Any) -> _ArrayProto:
        shape, fortran, dt, alignment = _check_wrapper_state(state)
        if self._in_frame():
            raise DataError("malformed joblib file: array data does not follow its wrapper")
        proto = _ArrayProto()
        if dt.hasobject:
            # joblib pickles object arrays (raw_text, id) as a nested pickle stream: read it
            # with a fresh restricted unpickler, so every rule applies there too.
            inner = _RestrictedUnpickler(self._stream, self._sink, nested=True).load()
            if not isinstance(inner, _ArrayProto) or not isinstance(inner.value, _ObjectArray):
                raise DataError("malformed joblib file: object array not stored as one")
            if inner.value.shape != shape:
                raise DataError("malformed joblib file: object array shape differs from wrapper")
            return inner
        if alignment is not None:
            pad = self._stream.read(1)
            if len(pad) != 1:
                raise EOFError("file ends inside a joblib array header")
            if len(self._stream.read(pad[0])) != pad[0]:
                raise EOFError("file ends inside a joblib array header")
        nbytes = math.prod(shape) * dt.itemsize
        if nbytes > self._stream.left():
            raise EOFError(
                f"array of {nbytes} bytes declared, only {self._stream.left()} bytes left in file"
            )
        proto.value = self._sink.from_stream(dt, shape, fortran, self._stream, nbytes)
        return proto


def _object_array(items: list, shape: tuple[int, ...], *, fortran: bool) -> _ObjectArray:
    for item in items:
        if type(item) not in _ATOMS:
            raise DataError(
                f"refused: an object array item that is {quote(item)} (only str, int, float, "
                "bool and None)"
            )
    if fortran and len(shape) > 1:
        items = np.array(items, dtype=object).reshape(shape[::-1]).T.reshape(-1).tolist()
    return _ObjectArray(items, shape)


def _check_wrapper_state(state: Any) -> tuple[tuple[int, ...], bool, np.dtype, int | None]:
    required = {"subclass", "shape", "order", "dtype"}
    optional = {"allow_mmap", "numpy_array_alignment_bytes"}
    if type(state) is not dict or not required <= state.keys() <= required | optional:
        found = (
            ", ".join(_short(k, 40) for k in sorted(state)[:10])
            if type(state) is dict
            else quote(state)
        )
        raise DataError(f"refused: malformed joblib array wrapper (fields {found})")
    order, alignment = state["order"], state.get("numpy_array_alignment_bytes")
    if state["subclass"] is not _NDARRAY:
        raise DataError(f"refused: joblib array wrapper of subclass {quote(state['subclass'])}")
    shape = _check_shape(state["shape"])
    if order not in ("C", "F") or not (
        alignment is None or (type(alignment) is int and 0 < alignment <= 256)
    ):
        raise DataError("refused: joblib array wrapper with an unknown order or alignment")
    return shape, order == "F", _dtype_of(state["dtype"]), alignment


# ----------------------------------------------------------------------------- reading


def _open_stream(
    path: Path, raw: IO[bytes], file_size: int
) -> tuple[Bounded, str | None, int | None, IO[bytes] | None]:
    head = raw.peek(16)[:16]  # type: ignore[attr-defined]
    compression = sniff(path, head)
    if compression is None:
        return Bounded(raw, file_size), None, check_pickle_head(path, head), None
    opener = next(op for name, _, op in COMPRESSED if name == compression)
    inner = opener(raw)
    inner_head = inner.peek(16)[:16]  # type: ignore[attr-defined]
    if not inner_head:
        raise DataError(f"{path}: compressed file holds no data")
    protocol = check_pickle_head(path, inner_head)
    limit = max(1 << 20, MAX_EXPANSION * file_size)
    return Bounded(inner, limit), compression, protocol, inner


def _read(path: Path, raw: IO[bytes], file_size: int, sink: Any) -> tuple[Any, LoadInfo, int]:
    """Unpickle from ``raw`` (buffered); returns the object, how it was stored, bytes consumed."""
    inner: IO[bytes] | None = None
    try:
        try:
            stream, compression, protocol, inner = _open_stream(path, raw, file_size)
            unpickler = _RestrictedUnpickler(stream, sink, nested=False)
            obj = unpickler.load()
        except DataError as exc:
            text = str(exc)
            raise DataError(text if text.startswith(str(path)) else f"{path}: {text}") from None
        except MemoryError:
            raise DataError(
                f"{path}: refused: reading it needs more memory than an import may use"
            ) from None
        except EOFError as exc:
            raise DataError(
                f"{path}: file ends early: truncated or corrupt ({_short(str(exc))})"
            ) from None
        except (OSError, *_CORRUPT) as exc:
            raise DataError(
                f"{path}: corrupt or not an MMSA data pickle "
                f"({type(exc).__name__}: {_short(str(exc))})"
            ) from None
    finally:
        if inner is not None:
            inner.close()
    fmt = "joblib" if unpickler.saw_joblib_wrapper else "pickle"
    return obj, LoadInfo(format=fmt, compression=compression, protocol=protocol), stream.pos


def _node_budget(consumed: int) -> int:
    """Containers and values a stream of ``consumed`` bytes may expand to.

    Every honest value costs at least two opcode bytes (a label as ``BININT1``, a string's
    length and text), so more nodes than half the bytes means memo references repeat shared
    sub-structures.
    """
    return consumed // 2 + 10_000


class _Budget:
    def __init__(self, nodes: int) -> None:
        self.nodes = nodes

    def spend(self, path: Path, count: int = 1) -> None:
        self.nodes -= count
        if self.nodes < 0:
            raise DataError(
                f"{path}: refused: the file's object graph expands to more items than it "
                "holds (shared sub-structures)"
            )


def _walk(
    obj: Any, path: Path, budget: _Budget, leaf: Callable[[Any], Any], *, tagged: bool = False
) -> Any:
    """Rebuild ``obj`` as a fresh tree, iteratively, with depth and node limits.

    Dicts, lists and tuples are rebuilt; ``leaf`` converts everything else. With ``tagged``
    (the JSON form of an import), dicts become ``{"t": "dict", "v": {...}}`` and tuples lists,
    so that leaves written as tagged dicts cannot be confused with data.
    """
    root: list[Any] = [None]
    todo: list[tuple[bool, Any, Any, Any, int]] = [(False, obj, root, 0, 0)]
    while todo:
        freeze, node, parent, slot, depth = todo.pop()
        if freeze:  # popped after all of the tuple's children were filled in
            parent[slot] = tuple(node)
            continue
        budget.spend(path)
        if depth > MAX_DEPTH:
            raise DataError(f"{path}: refused: containers nested more than {MAX_DEPTH} deep")
        kind = type(node)
        if kind is dict or kind is list or kind is tuple:
            budget.spend(path, len(node))  # before queueing the children
        if kind is dict:
            out: Any = {}
            parent[slot] = {"t": "dict", "v": out} if tagged else out
            for key, value in node.items():
                out[key] = None
                todo.append((False, value, out, key, depth + 1))
        elif kind is list or kind is tuple:
            out = [None] * len(node)
            parent[slot] = out
            if kind is tuple and not tagged:
                todo.append((True, out, parent, slot, depth))
            for i, value in enumerate(node):
                todo.append((False, value, out, i, depth + 1))
        else:
            parent[slot] = leaf(node)
    return root[0]


def _leaf_value(node: Any, path: Path) -> Any:
    if type(node) in (str, bytes, bytearray, bool, float, complex, type(None), set, frozenset):
        return node
    if type(node) is int:
        if node.bit_length() > 64:
            raise DataError(f"{path}: refused: an integer wider than 64 bits")
        return node
    if isinstance(node, np.generic):
        return node
    raise DataError(f"{path}: refused: {quote(node)} where data was expected")


def load_untrusted_with_info(path: Path) -> tuple[Any, LoadInfo]:
    """Load a plain pickle or a joblib file (auto-detected, optionally compressed) safely, here.

    Raises DataError for a missing, unreadable or non-regular file, a file that is not a
    pickle, a truncated or corrupt one, and for anything outside the rules of the module
    docstring (before it is called or allocated).
    """
    path = Path(path)
    raw = open_regular(path)
    with raw:
        size = os.fstat(raw.fileno()).st_size
        obj, info, consumed = _read(path, io.BufferedReader(raw, 1 << 20), size, _MemorySink())
    budget = _Budget(_node_budget(consumed))

    def leaf(node: Any) -> Any:
        if isinstance(node, _ArrayProto):
            if node.value is None:
                raise DataError(f"{path}: refused: an array without data")
            value = node.value
            if isinstance(value, _ObjectArray):
                array = np.empty(len(value.items), dtype=object)
                array[:] = value.items
                return array.reshape(value.shape)
            return value
        return _leaf_value(node, path)

    return _walk(obj, path, budget, leaf), info


def load_untrusted(path: Path) -> Any:
    """Safely load an untrusted data file (plain pickle or joblib, auto-detected)."""
    return load_untrusted_with_info(path)[0]


# ----------------------------------------------------------------------------- import


def _tagged_leaf(node: Any, path: Path, budget: _Budget) -> Any:
    if isinstance(node, _ArrayProto):
        value = node.value
        if isinstance(value, _Stored):
            return {"t": "array", "file": value.file}
        if isinstance(value, _ObjectArray):
            budget.spend(path, len(value.items))
            for item in value.items:
                if type(item) is int and item.bit_length() > 64:
                    raise DataError(f"{path}: refused: an integer wider than 64 bits")
            return {"t": "objects", "shape": list(value.shape), "v": value.items}
        raise DataError(f"{path}: refused: an array without data")
    if isinstance(node, (bytes, bytearray)):
        return {"t": "bytes", "v": base64.b64encode(node).decode("ascii")}
    if isinstance(node, complex):
        return {"t": "complex", "v": [node.real, node.imag]}
    if isinstance(node, (set, frozenset)):
        return {"t": "set", "v": [_tagged_leaf(x, path, budget) for x in node]}
    if isinstance(node, np.generic):
        item = node.item()
        value = [item.real, item.imag] if isinstance(item, complex) else item
        return {"t": "scalar", "dtype": node.dtype.str, "v": value}
    if isinstance(node, _Blob):
        raise DataError(f"{path}: refused: a byte string of {node.size} bytes outside any array")
    return _leaf_value(node, path)


def import_to_folder(source: str | Path, folder: str | Path) -> None:
    """Read an untrusted data file and write its content into ``folder`` (meant for a sandbox).

    Arrays become ``.npy`` files (no pickled objects), everything else one JSON tree in
    ``manifest.json`` together with the source's SHA-256 and size (hashed while it is read).
    """
    path, folder = Path(source), Path(folder)
    raw = open_regular(path)
    with raw:
        size = os.fstat(raw.fileno()).st_size
        hashing = HashingReader(raw)
        buffered = io.BufferedReader(hashing, 1 << 20)
        sink = _FolderSink(folder)
        obj, info, consumed = _read(path, buffered, size, sink)
        while buffered.read(CHUNK):
            pass
        digest, hashed = hashing.sha.hexdigest(), hashing.size
    if hashed != size:
        raise DataError(f"{path}: the file changed while it was read")
    budget = _Budget(_node_budget(consumed))
    tree = _walk(obj, path, budget, lambda node: _tagged_leaf(node, path, budget), tagged=True)
    for leftover in folder.glob("blob*.npy"):
        leftover.unlink()
    manifest = {
        "format_version": FORMAT_VERSION,
        "source": {"sha256": digest, "size": size},
        "info": {"format": info.format, "compression": info.compression, "protocol": info.protocol},
        "tree": tree,
    }
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, folder / MANIFEST)
