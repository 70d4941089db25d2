"""The import cache: each untrusted data file is parsed once, in a sandbox, into plain arrays.

On first use of a data file (real or synthetic) its pickle/joblib content is read by the
restricted reader of ``mer_bench.data.safe_pickle`` in a resource-limited child process
(``mer_bench.data.sandbox``), which writes every array as a ``.npy`` file and everything else as
one JSON tree, with the source's SHA-256 and size. Later loads read that folder: arrays are
memory-mapped copy-on-write (``numpy.load(..., mmap_mode="c", allow_pickle=False)``), so worker
processes on one host share the pages instead of each holding a copy (a page a process writes
to, e.g. audio ``-inf`` set to 0, becomes private to it; the cache file never changes), and no
pickle is parsed again.

Where: ``$MER_BENCH_IMPORT_CACHE`` if set, else ``$MER_BENCH_CACHE/imports``, else
``~/.cache/mer_bench/imports``; one folder per source path. Deleting the folder is always safe
(``clear_cache`` does it): files are re-imported on next use. A source whose size or mtime
changed is re-hashed; a different SHA-256 means a new import.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mer_bench.data.checksums import sha256_file
from mer_bench.data.safe_pickle import FORMAT_VERSION, MANIFEST, MAX_DEPTH, LoadInfo
from mer_bench.data.sandbox import Limits, SandboxError, run_sandboxed
from mer_bench.data.streams import MAX_EXPANSION, open_regular
from mer_bench.errors import DataError

__all__ = [
    "ENV_IMPORT_CACHE",
    "Imported",
    "cache_root",
    "clear_cache",
    "digest",
    "import_limits",
    "load",
]

ENV_IMPORT_CACHE = "MER_BENCH_IMPORT_CACHE"
_ARRAY_FILE = re.compile(r"a\d{5,}\.npy")
_ALLOWED_KINDS = frozenset("biufcU")
_ATOMS = (str, int, float, bool, type(None))
_IMPORTER = "mer_bench.data.safe_pickle:import_to_folder"


@dataclass(frozen=True)
class Imported:
    """A data file's content read from the cache."""

    content: Any
    """The file's object tree: dicts, lists, str/numbers, copy-on-write memory-mapped arrays."""
    info: LoadInfo
    sha256: str
    size: int
    folder: Path


def cache_root() -> Path:
    """Folder holding one import folder per source file (module docstring)."""
    explicit = os.environ.get(ENV_IMPORT_CACHE)
    if explicit:
        return Path(explicit)
    base = os.environ.get("MER_BENCH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "mer_bench") / "imports"


def clear_cache() -> Path:
    """Delete every imported file (they are re-imported on next use); returns the folder."""
    root = cache_root()
    shutil.rmtree(root, ignore_errors=True)
    return root


def import_limits(file_size: int) -> Limits:
    """Limits for importing a file of ``file_size`` bytes: what it can honestly need.

    Arrays are streamed to disk, so memory only holds the pickle's other objects (at most a
    few times the file's bytes); CPU time allows for decompression at a few MB/s.
    """
    stream = max(1 << 20, MAX_EXPANSION * file_size)
    return Limits(
        address_space=(512 << 20) + 3 * file_size,
        cpu_seconds=60 + file_size // (2 << 20),
        wall_seconds=120.0 + file_size / (1 << 20),
        file_size=stream + (1 << 20),
    )


def _entry(path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    return cache_root() / key[:32]


@contextlib.contextmanager
def _locked(entry: Path) -> Iterator[None]:
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_suffix(".lock"), "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        return None
    return manifest


def _write_manifest(folder: Path, manifest: dict) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, folder / MANIFEST)


_STALE_SECONDS = 24 * 3600


def _remove_stale(root: Path) -> None:
    """Drop half-written import folders a killed process left behind (older than a day)."""
    now = time.time()
    for folder in root.glob(".import-*"):
        with contextlib.suppress(OSError):
            if now - folder.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)


def _import(path: Path, entry: Path, size: int) -> dict:
    _remove_stale(entry.parent)
    tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=entry.parent))
    try:
        try:
            run_sandboxed(_IMPORTER, [str(path.resolve()), str(tmp)], import_limits(size), cwd=tmp)
        except SandboxError as exc:
            text = str(exc)
            message = text if text.startswith(str(path.resolve())) else f"{path}: {text}"
            raise DataError(message) from None
        manifest = _read_manifest(tmp)
        if manifest is None:
            raise DataError(f"{path}: the import wrote no readable manifest")
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def load(path: Path) -> Imported:
    """The content of data file ``path``, imported into the cache first if needed.

    DataError for a missing or non-regular file, and for any file the sandboxed import refuses
    (with the reason) or that exceeds the import's resource limits.
    """
    path = Path(path)
    with open_regular(path) as fh:  # refuses FIFOs and devices before anything else
        st = os.fstat(fh.fileno())
    entry = _entry(path)
    try:
        with _locked(entry):
            manifest = _read_manifest(entry)
            source = manifest.get("source", {}) if manifest else {}
            fresh = source.get("size") == st.st_size and source.get("mtime_ns") == st.st_mtime_ns
            if manifest is not None and not fresh:
                same = source.get("size") == st.st_size and source.get("sha256") == sha256_file(
                    path
                )
                if not same:
                    manifest = None
            if manifest is None:
                manifest = _import(path, entry, st.st_size)
            if not fresh:
                manifest["source"].update(path=str(path.resolve()), mtime_ns=st.st_mtime_ns)
                _write_manifest(entry, manifest)
    except OSError as exc:
        raise DataError(
            f"cannot use the import cache {cache_root()} ({exc.strerror or exc}); set "
            f"{ENV_IMPORT_CACHE} to a writable folder"
        ) from None
    return _decoded(path, entry, manifest)


def digest(path: Path) -> str:
    """The SHA-256 of data file ``path``: the one its import recorded while the file's size and
    mtime are unchanged, else computed from the file (large files are not hashed twice)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot read data file ({exc.strerror or exc})") from None
    manifest = _read_manifest(_entry(path))
    source = manifest.get("source", {}) if manifest else {}
    if (
        source.get("size") == st.st_size
        and source.get("mtime_ns") == st.st_mtime_ns
        and isinstance(source.get("sha256"), str)
    ):
        return str(source["sha256"])
    return sha256_file(path)


def _decoded(path: Path, entry: Path, manifest: dict) -> Imported:
    try:
        info = LoadInfo(**manifest["info"])
        content = _decode(manifest["tree"], entry, 0)
        source = manifest["source"]
        return Imported(content, info, str(source["sha256"]), int(source["size"]), entry)
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise DataError(
            f"{path}: its import cache {entry} is damaged ({type(exc).__name__}); delete that "
            "folder and retry"
        ) from None


def _decode(node: Any, folder: Path, depth: int) -> Any:
    if depth > MAX_DEPTH + 1:
        raise ValueError("nested too deep")
    if isinstance(node, list):
        return [_decode(v, folder, depth + 1) for v in node]
    if not isinstance(node, dict):
        if not isinstance(node, _ATOMS):
            raise TypeError("unexpected value")
        return node
    tag, value = node["t"], node.get("v")
    if tag == "dict":
        return {str(k): _decode(v, folder, depth + 1) for k, v in value.items()}
    if tag == "array":
        return _array(folder, node["file"])
    if tag == "objects":
        shape = tuple(int(s) for s in node["shape"])
        if not all(isinstance(v, _ATOMS) for v in value):
            raise TypeError("object array item")
        array = np.empty(len(value), dtype=object)
        array[:] = value
        return array.reshape(shape)
    if tag == "bytes":
        import base64

        return base64.b64decode(value)
    if tag == "complex":
        return complex(float(value[0]), float(value[1]))
    if tag == "set":
        return set(_decode(v, folder, depth + 1) for v in value)
    if tag == "scalar":
        dtype = np.dtype(str(node["dtype"]))
        if dtype.kind not in _ALLOWED_KINDS:
            raise TypeError("scalar dtype")
        return dtype.type(complex(*value) if dtype.kind == "c" else value)
    raise ValueError("unknown tag")


def _array(folder: Path, name: Any) -> np.ndarray:
    if not isinstance(name, str) or not _ARRAY_FILE.fullmatch(name):
        raise ValueError("array file name")
    file = folder / name
    with open(file, "rb") as fh:
        if np.lib.format.read_magic(fh) != (1, 0):
            raise ValueError("array file version")
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    if dtype.kind not in _ALLOWED_KINDS or dtype.hasobject:
        raise TypeError("array dtype")
    if 0 in shape:
        array = np.load(file, allow_pickle=False)
    else:
        # Copy-on-write: pages stay shared with other processes until this one writes to
        # them (e.g. zeroing audio's -inf), and no write ever reaches the cache file.
        array = np.load(file, mmap_mode="c", allow_pickle=False)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array
