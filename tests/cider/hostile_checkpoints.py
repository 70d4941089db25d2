"""Hand-built ``torch.save``-style zips whose pickles reference only real torch names.

``write_checkpoint`` writes a module graph (stubbed ``torch.nn.Module`` objects) with storages
given as raw bytes; ``tensor`` and ``module`` build the pieces, with any size/stride/offset.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch._utils
from torch import nn


class Reduce:
    """Pickles as ``func(*args)`` (then BUILD with ``state`` if given)."""

    def __init__(self, func: Any, args: tuple, state: Any = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple:
        if self.state is None:
            return self.func, self.args
        return self.func, self.args, self.state


class StorageRef:
    """A persistent storage id: ``('storage', torch.<type_name>, key, location, numel)``."""

    def __init__(
        self, key: str, numel: int, type_name: str = "FloatStorage", location: str = "cpu"
    ):
        self.key, self.numel, self.type_name, self.location = key, numel, type_name, location


def tensor(storage: StorageRef, size: tuple, stride: tuple, offset: int = 0) -> Reduce:
    rebuild = torch._utils._rebuild_tensor_v2
    return Reduce(rebuild, (storage, offset, size, stride, False, collections.OrderedDict()))


def module(parameters: Any = None, modules: Any = None, buffers: Any = None) -> nn.Module:
    """A plain ``nn.Module`` whose registries are replaced by whatever is given."""
    m = nn.Module()
    m.__dict__.update(
        _parameters={} if parameters is None else parameters,
        _buffers={} if buffers is None else buffers,
        _modules={} if modules is None else modules,
    )
    return m


def write_checkpoint(
    path: Path,
    root: Any,
    storages: dict[str, bytes],
    compress: int = zipfile.ZIP_STORED,
) -> Path:
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=2)

    def persistent_id(obj: Any) -> Any:
        if isinstance(obj, StorageRef):
            return ("storage", getattr(torch, obj.type_name), obj.key, obj.location, obj.numel)
        return None

    pickler.persistent_id = persistent_id  # type: ignore[method-assign]
    pickler.dump(root)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", buf.getvalue())
        archive.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            info = zipfile.ZipInfo(f"archive/data/{key}")
            info.compress_type = compress
            archive.writestr(info, data)
    return path


def floats(n: int) -> bytes:
    return torch.arange(n, dtype=torch.float32).numpy().tobytes()
