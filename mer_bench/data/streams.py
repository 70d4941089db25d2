"""Opening untrusted files and bounding what can be read from them.

``open_regular`` refuses anything but a regular file (a FIFO would block forever, a device
never end). ``sniff`` recognises compressed containers and files that are clearly not pickles.
``Bounded`` wraps the (decompressed) stream and refuses any read beyond a byte budget before
it happens: the bytes left in an uncompressed file, or ``MAX_EXPANSION`` times a compressed
file's size, so a declared length can never make the reader allocate more than the file can
honestly hold. ``HashingReader`` hashes the source while it is read (one pass for the import
manifest).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import pickle
import stat
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mer_bench.errors import DataError

__all__ = [
    "CHUNK",
    "COMPRESSED",
    "MAX_EXPANSION",
    "Bounded",
    "HashingReader",
    "check_pickle_head",
    "open_regular",
    "sniff",
]

MAX_EXPANSION = 2000
"""A compressed file may expand to at most this many times its size (zlib tops out near 1032)."""
CHUNK = 1 << 22

# Protocol 0/1 pickles have no header; a dump of a dict starts with one of these opcodes.
_OLD_PROTOCOL_START = frozenset(b"(}])")


class Bounded:
    """File-like view of the (decompressed) stream that refuses reads beyond ``limit`` bytes."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self._inner = inner
        self.limit = limit
        self.pos = 0

    def left(self) -> int:
        return self.limit - self.pos

    def _claim(self, n: int) -> None:
        if n < 0 or n > self.left():
            raise DataError(
                f"refused: the file declares {n} bytes where at most {self.left()} can follow"
            )

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            raise DataError("refused: unbounded read")
        self._claim(n)
        data = self._inner.read(n)
        self.pos += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        cap = self.left() if size is None or size < 0 else min(size, self.left())
        data = self._inner.readline(cap)
        self.pos += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        self._claim(len(view))
        got = self._inner.readinto(view)  # type: ignore[attr-defined]
        self.pos += got or 0
        return got or 0

    def readinto_exact(self, view: memoryview) -> None:
        self._claim(len(view))
        done = 0
        while done < len(view):
            got = self._inner.readinto(view[done : done + CHUNK])  # type: ignore[attr-defined]
            if not got:
                raise EOFError(f"array data ends after {done} of {len(view)} bytes")
            done += got
            self.pos += got

    def copy_to(self, out: IO[bytes], n: int) -> None:
        self._claim(n)
        done = 0
        while done < n:
            chunk = self._inner.read(min(CHUNK, n - done))
            if not chunk:
                raise EOFError(f"data ends after {done} of {n} bytes")
            out.write(chunk)
            done += len(chunk)
            self.pos += len(chunk)


class HashingReader(io.RawIOBase):
    """Raw reader of the source file that hashes every byte read (one pass for the manifest)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        got = self._raw.readinto(b)  # type: ignore[attr-defined]
        if got:
            self.sha.update(memoryview(b)[:got])
            self.size += got
        return got or 0

    def finish(self) -> tuple[str, int]:
        while self.read(CHUNK):
            pass
        return self.sha.hexdigest(), self.size


class ZlibReader(io.RawIOBase):
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
            chunk = self._decomp.unconsumed_tail or self._raw.read(1 << 16)
            if not chunk:
                raise EOFError("compressed stream ends before its end marker")
            # max_length bounds what one compressed chunk may expand to in memory.
            self._buf, self._pos = self._decomp.decompress(chunk, 1 << 22), 0
        n = min(len(view), len(self._buf) - self._pos)
        view[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n


def _is_zlib(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0


COMPRESSED: tuple[tuple[str, Callable[[bytes], bool], Callable[[IO[bytes]], IO[bytes]]], ...] = (
    ("gzip", lambda h: h.startswith(b"\x1f\x8b"), lambda f: gzip.GzipFile(fileobj=f)),
    ("bz2", lambda h: h.startswith(b"BZh"), lambda f: bz2.BZ2File(f)),
    ("xz", lambda h: h.startswith(b"\xfd7zXZ\x00"), lambda f: lzma.LZMAFile(f)),
    (
        "lzma",
        lambda h: h.startswith(b"\x5d\x00\x00"),
        lambda f: lzma.LZMAFile(f, format=lzma.FORMAT_ALONE),
    ),
    ("zlib", _is_zlib, lambda f: io.BufferedReader(ZlibReader(f), 1 << 20)),
)

NOT_PICKLE: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG image"),
    (b"PK\x03\x04", "a zip archive (an .npz, a torch checkpoint or similar)"),
    (b"\x93NUMPY", "a .npy array file"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x04\x22\x4d\x18", "an lz4-compressed file (lz4 is not supported; re-save uncompressed)"),
)


def open_regular(path: Path) -> IO[bytes]:
    """Open a regular file for reading; DataError for FIFOs, devices, folders or missing files."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot open data file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file (a folder, FIFO or device); refused")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError(f"{path}: cannot open data file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between stat and open
        os.close(fd)
        raise DataError(f"{path}: not a regular file; refused")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=0)


def check_pickle_head(path: Path, head: bytes) -> int | None:
    if head[0] == pickle.PROTO[0]:
        if len(head) < 2 or not 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
            raise DataError(
                f"{path}: not a pickle file (unknown pickle protocol header {head[:2]!r})"
            )
        return head[1]
    if head[0] in _OLD_PROTOCOL_START:
        return None
    raise DataError(f"{path}: not a pickle file (starts with {head[:8]!r})")


def sniff(path: Path, head: bytes) -> str | None:
    """Raise DataError for files that are clearly not pickles; return a compression name."""
    if not head:
        raise DataError(f"{path}: file is empty")
    for name, matches, _ in COMPRESSED:
        if matches(head):
            return name
    for magic, what in NOT_PICKLE:
        if head.startswith(magic):
            raise DataError(f"{path}: not a pickle file: it is {what}")
    check_pickle_head(path, head)
    return None
