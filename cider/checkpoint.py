"""Import official CIDer checkpoints (whole pickled modules, docs/cider.md, Q-24) safely.

The reference saves ``torch.save(model)``: a zip whose ``data.pkl`` references the reference's
classes (``src.models.CIDERModel``, ``modules.transformer.*``), transformers' BERT/tokenizer,
``torch.nn`` modules and a few functions. Nothing from the file is executed, and nothing torch
offers is called with unchecked file content:

- classes of the known model namespaces become inert stub classes whose instances only record
  the pickled state (``__dict__``) and constructor arguments; only stubs accept pickle's BUILD;
- tensors are rebuilt by our own functions: a storage is the bytes of a stored (uncompressed)
  zip member whose size equals what the pickle declares, and a tensor's size, stride and offset
  are checked against its storage before the view is made (no view may hold more elements than
  its storage); storage types and dtypes are markers looked up in fixed tables (no storage
  constructor is reachable, no module is imported to resolve a name);
- dict keys and set items must be plain scalars, so no file-built tuple is ever hashed; storage
  locations other than CPU/CUDA are refused (CUDA ones load onto the CPU);
- every other global (``os.system``, ``builtins.eval``, ``subprocess.*``, any unknown module)
  is refused with ``DataError`` before anything runs.

The stub module tree is then walked iteratively with a depth limit (``_modules``,
``_parameters``, persistent ``_buffers``; names must be ``str``) to collect the state dict under
the reference names (BERT under ``text_model.model.``). ``import_checkpoint`` does all of this
in a resource-limited child process (``mer_bench.data.sandbox``) that writes safetensors, which
the caller reads back.
"""

from __future__ import annotations

import _compat_pickle
import collections
import json
import math
import os
import pickle
import re
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mer_bench.data.restricted_pickle import RestrictedUnpickler, quote
from mer_bench.data.sandbox import Limits, SandboxError, run_sandboxed
from mer_bench.data.streams import open_regular
from mer_bench.errors import DataError

# Module prefixes whose globals become inert stubs (the reference model's object graph).
STUB_PREFIXES: tuple[str, ...] = (
    "src.",
    "modules.",
    "transformers.",
    "tokenizers",
    "torch.nn.",
    "torch._C._nn",
)
MAX_DEPTH = 64
"""Nesting of submodules (the reference's BERT is about ten deep)."""
MAX_MODULES = 100_000
MAX_NDIM = 8

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
_DTYPES: dict[str, torch.dtype] = {
    name: dtype
    for dtype in (
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex64,
        torch.complex128,
    )
    for name in (str(dtype).removeprefix("torch."),)
} | {"float": torch.float32, "double": torch.float64, "half": torch.float16, "long": torch.int64}
_LOCATION = re.compile(r"cpu|cuda(:\d{1,3})?")
_KEY_TYPES = (str, int, float, bool, bytes, type(None))


class _StorageType:
    """What ``torch.<X>Storage`` resolves to: a name for persistent ids, not a constructor."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str) -> None:
        self.name, self.dtype = name, _STORAGE_DTYPES[name]


_STORAGE_TYPES = {name: _StorageType(name) for name in _STORAGE_DTYPES}


class StubObject:
    """An instance of a stubbed reference class: records what the pickle gave it."""

    _stub_name: str = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_stub_args"] = (args, kwargs)

    def __new__(cls, *args: Any, **kwargs: Any) -> StubObject:
        obj = object.__new__(cls)
        obj.__dict__["_stub_args"] = (args, kwargs)
        return obj

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict | None):
            state, slots = state
            if isinstance(slots, dict):
                self.__dict__.update(_str_keyed(slots))
        if isinstance(state, dict):
            self.__dict__.update(_str_keyed(state))
        else:
            self.__dict__["_stub_state"] = state

    # Pickled containers (ModuleList/Sequential keep their items in _modules, but a stubbed
    # dict/list subclass may receive SETITEM/APPEND): record them instead of failing.
    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_stub_items", {})[_plain_key(key)] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("_stub_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("_stub_list", []).extend(values)

    def __repr__(self) -> str:
        return f"<stub {self._stub_name}>"


def _plain_key(key: Any) -> Any:
    if type(key) not in _KEY_TYPES:
        raise DataError(f"checkpoint uses {quote(key)} as a dict key or set item (refused)")
    return key


def _str_keyed(state: dict) -> dict:
    for key in state:
        if type(key) is not str:
            raise DataError(f"checkpoint object state has a key that is {quote(key)} (refused)")
    return state


def _codecs_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """The protocol-2 bytes round trip (``_codecs.encode(str, 'latin1')``), limited to text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise DataError("checkpoint uses _codecs.encode in an unexpected way")
    if errors != "strict":
        raise DataError("checkpoint uses _codecs.encode in an unexpected way")
    return text.encode(encoding)


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    if args and not (len(args) == 1 and args[0] in ([], ())):
        raise DataError("checkpoint builds an OrderedDict from unexpected arguments")
    return collections.OrderedDict()


def _set(items: Any = ()) -> set:
    if not isinstance(items, (list, tuple)):
        raise DataError("checkpoint builds a set from unexpected arguments")
    return {_plain_key(x) for x in items}


def _frozenset(items: Any = ()) -> frozenset:
    return frozenset(_set(items))


def _tuple(items: Any = ()) -> tuple:
    if not isinstance(items, (list, tuple)):
        raise DataError("checkpoint builds a tuple from unexpected arguments")
    return tuple(items)


def _list(items: Any = ()) -> list:
    if not isinstance(items, (list, tuple)):
        raise DataError("checkpoint builds a list from unexpected arguments")
    return list(items)


def _dict(*args: Any) -> dict:
    if args:
        raise DataError("checkpoint builds a dict from unexpected arguments")
    return {}


def _complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    if type(real) not in (int, float) or type(imag) not in (int, float):
        raise DataError("checkpoint builds a complex number from unexpected arguments")
    return complex(real, imag)


def _slice(*args: Any) -> slice:
    if len(args) > 3 or not all(a is None or type(a) is int for a in args):
        raise DataError("checkpoint builds a slice from unexpected arguments")
    return slice(*args)


def _bytearray(*args: Any) -> bytearray:
    if args and not (len(args) == 1 and isinstance(args[0], (bytes, bytearray))):
        raise DataError("checkpoint builds a bytearray from unexpected arguments")
    return bytearray(*args)


def _size(dims: Any = ()) -> tuple[int, ...]:
    if not isinstance(dims, (list, tuple)) or not all(type(d) is int and d >= 0 for d in dims):
        raise DataError("checkpoint has a malformed torch.Size")
    return tuple(dims)


def _device(kind: Any, index: Any = None) -> str:
    text = kind if index is None else f"{kind}:{index}"
    if not isinstance(text, str) or not _LOCATION.fullmatch(text):
        raise DataError(f"checkpoint refers to device {quote(text)}: only cpu and cuda are read")
    return "cpu"


_BUILTINS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("builtins", "set"): _set,
    ("builtins", "frozenset"): _frozenset,
    ("builtins", "tuple"): _tuple,
    ("builtins", "list"): _list,
    ("builtins", "dict"): _dict,
    ("builtins", "complex"): _complex,
    ("builtins", "slice"): _slice,
    ("builtins", "bytearray"): _bytearray,
    ("_codecs", "encode"): _codecs_encode,
    ("torch", "Size"): _size,
    ("torch", "device"): _device,
}


class _RestrictedUnpickler(RestrictedUnpickler):
    """Pure-Python unpickler: allow-listed globals, our tensor rebuilds, checked containers.

    Containers (``mer_bench.data.restricted_pickle``): dict keys and set items must be plain
    scalars (``_plain_key``); dicts (``OrderedDict`` too) and stubs receive items, lists and
    stubs appended ones (a stubbed dict or list subclass records them).
    """

    dispatch = RestrictedUnpickler.dispatch.copy()
    dict_targets = (dict, StubObject)
    list_targets = (list, StubObject)
    refusal_format = "checkpoint {} (refused)"

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._stubs: dict[tuple[str, str], type] = {}
        self._storages: dict[str, tuple[_StorageType, int, torch.UntypedStorage]] = {}
        self._storage_ids: dict[int, int] = {}
        """id of each storage made here → its element count."""
        self._stored_elements = 0
        self._viewed_elements = 0
        self._rebuilders = {
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter,
            ("torch._tensor", "_rebuild_from_type_v2"): self._rebuild_from_type,
        }

    def find_class(self, module: str, name: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise DataError("checkpoint names a global by something other than text (refused)")
        # Protocol-2 pickles name Python 2 modules (``__builtin__.set``); map them as pickle does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        key = (module, name)
        if key in _BUILTINS:
            return _BUILTINS[key]
        if key in self._rebuilders:
            return self._rebuilders[key]
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        # torch.Tensor only appears as the target type of _rebuild_from_type_v2 (ignored).
        stubbed = module.startswith(STUB_PREFIXES) or module in ("src", "modules", "tokenizers")
        if stubbed or key == ("torch", "Tensor"):
            if key not in self._stubs:
                self._stubs[key] = type(name, (StubObject,), {"_stub_name": f"{module}.{name}"})
            return self._stubs[key]
        raise DataError(
            f"checkpoint refers to {module[:80]}.{name[:80]}, which is not allowed (refused)"
        )

    # --- containers and object state

    def _is_stub_class(self, cls: Any) -> bool:
        return isinstance(cls, type) and issubclass(cls, StubObject)

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not self._is_stub_class(cls) or not isinstance(args, tuple):
            raise DataError("checkpoint constructs an object that is not a stub (refused)")
        self.append(cls.__new__(cls, *args))

    def _load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if not self._is_stub_class(cls) or not isinstance(args, tuple):
            raise DataError("checkpoint constructs an object that is not a stub (refused)")
        if not isinstance(kwargs, dict):
            raise DataError("checkpoint constructs an object with malformed arguments")
        self.append(cls.__new__(cls, *args, **_str_keyed(kwargs)))

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, StubObject):
            raise DataError(f"checkpoint sets the state of {quote(inst)} (refused)")
        inst.__setstate__(state)

    def _key(self, key: Any) -> Any:
        return _plain_key(key)

    def _set_item(self, item: Any) -> Any:
        return _plain_key(item)

    def _accepts(self, target: Any, kinds: tuple[type, ...]) -> bool:
        return isinstance(target, kinds)  # subclasses: OrderedDict and the stub classes

    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    dispatch[pickle.BUILD[0]] = _load_build

    # --- storages and tensors

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise DataError("checkpoint has an unexpected persistent id")
        _, storage_type, key, location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise DataError("checkpoint storage has an unexpected type")
        if not isinstance(key, str) or not re.fullmatch(r"\w{1,64}", key):
            raise DataError("checkpoint storage has a malformed key")
        if not isinstance(location, str) or not _LOCATION.fullmatch(location):
            raise DataError(
                f"checkpoint storage on device {quote(location)}: only cpu and cuda are read"
            )
        if type(numel) is not int or numel < 0:
            raise DataError("checkpoint storage has a malformed size")
        if key in self._storages:
            kind, count, storage = self._storages[key]
            if kind is not storage_type or count != numel:
                raise DataError(f"checkpoint storage data/{key} is declared twice differently")
            return storage
        itemsize = torch.empty((), dtype=storage_type.dtype).element_size()
        member = f"{self._prefix}data/{key}"
        try:
            info = self._archive.getinfo(member)
        except KeyError:
            raise DataError(f"checkpoint lacks the storage record data/{key}") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise DataError(f"checkpoint storage data/{key} is compressed (torch never does)")
        if info.file_size != numel * itemsize:
            raise DataError(
                f"checkpoint storage data/{key} holds {info.file_size} bytes, the pickle "
                f"declares {numel * itemsize}"
            )
        raw = bytearray(self._archive.read(member))
        flat = torch.frombuffer(raw, dtype=storage_type.dtype) if raw else torch.empty(0)
        storage = torch.storage.TypedStorage(
            wrap_storage=flat.untyped_storage(), dtype=storage_type.dtype, _internal=True
        )
        self._storages[key] = (storage_type, numel, storage)
        self._storage_ids[id(storage)] = numel
        self._stored_elements += numel
        return storage

    def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
        if id(storage) not in self._storage_ids:
            raise DataError("checkpoint rebuilds a tensor from something that is not a storage")
        ok = type(offset) is int and offset >= 0
        ok = ok and isinstance(size, tuple) and isinstance(stride, tuple)
        ok = ok and len(size) == len(stride) <= MAX_NDIM
        ok = ok and all(type(d) is int and d >= 0 for d in (*size, *stride))
        if not ok:
            raise DataError("checkpoint tensor has a malformed size, stride or offset")
        count = math.prod(size)
        total = self._storage_ids[id(storage)]
        if count:
            last = offset + sum((d - 1) * s for d, s in zip(size, stride))
            if last >= total or count > total:
                raise DataError(
                    f"checkpoint tensor of size {list(size)} does not fit its storage of "
                    f"{total} elements"
                )
        self._viewed_elements += count
        if self._viewed_elements > 2 * self._stored_elements + (1 << 20):
            raise DataError("checkpoint tensors repeat their storages many times (refused)")
        t = torch.empty((0,), dtype=storage.dtype)
        return t.set_(storage._untyped_storage, offset, size, stride)

    def _rebuild_tensor_v2(
        self,
        storage: Any,
        offset: Any,
        size: Any,
        stride: Any,
        requires_grad: Any = False,
        backward_hooks: Any = None,
        metadata: Any = None,
    ) -> torch.Tensor:
        if type(requires_grad) is not bool or (backward_hooks and len(backward_hooks)):
            raise DataError("checkpoint tensor has unexpected autograd state")
        return self._rebuild_tensor(storage, offset, size, stride)

    def _rebuild_parameter(self, data: Any, requires_grad: Any, hooks: Any, *_: Any) -> Any:
        if not isinstance(data, torch.Tensor):
            raise DataError("checkpoint parameter does not hold a tensor")
        return data

    def _rebuild_from_type(self, func: Any, _new_type: Any, args: Any, _state: Any) -> Any:
        """Stand-in for ``torch._tensor._rebuild_from_type_v2`` (tensors that carry Python
        attributes): rebuild with one of our rebuild functions, drop subclass and state."""
        if func not in self._rebuilders.values() or not isinstance(args, tuple):
            raise DataError("checkpoint rebuilds a tensor with an unexpected function")
        return func(*args)


def _pickle_record(archive: zipfile.ZipFile) -> tuple[bytes, str]:
    names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(names) != 1:
        raise DataError("not a torch.save zip checkpoint (no unique */data.pkl)")
    prefix = names[0][: -len("data.pkl")]
    order = f"{prefix}byteorder"
    if order in archive.namelist() and archive.read(order).strip() != b"little":
        raise DataError("big-endian checkpoints are not supported")
    info = archive.getinfo(names[0])
    if info.compress_type != zipfile.ZIP_STORED or info.file_size > (256 << 20):
        raise DataError("checkpoint data.pkl is compressed or implausibly large (refused)")
    return archive.read(names[0]), prefix


def load_stub_tree(path: Path) -> Any:
    """The unpickled object graph of a ``torch.save`` zip, with every class stubbed."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"checkpoint not found: {path}")
    try:
        with open_regular(path) as fh, zipfile.ZipFile(fh) as archive:
            data, prefix = _pickle_record(archive)
            return _RestrictedUnpickler(data, archive, prefix).load()
    except zipfile.BadZipFile:
        raise DataError(f"{path} is not a torch.save zip checkpoint") from None
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except MemoryError:
        raise DataError(f"{path}: reading the checkpoint needs more memory than allowed") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        TypeError,
        ValueError,
        KeyError,
        IndexError,
        OverflowError,
        RuntimeError,
        struct.error,
        NotImplementedError,
    ) as exc:
        raise DataError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc)[:160]}"
        ) from None


def _state(obj: Any) -> Mapping[str, Any]:
    return obj.__dict__ if isinstance(obj, StubObject) else {}


def _named(mapping: Any, what: str, where: str) -> list[tuple[str, Any]]:
    if mapping is None:
        return []
    if not isinstance(mapping, dict):
        raise DataError(f"checkpoint module {where or '<root>'}: {what} is not a dict")
    for name in mapping:
        if not isinstance(name, str) or not name or "." in name:
            raise DataError(f"checkpoint module {where or '<root>'}: {what} name {quote(name)}")
    return list(mapping.items())


def collect_state_dict(root: Any) -> dict[str, torch.Tensor]:
    """Walk a stub module tree like ``nn.Module.state_dict``: own parameters, persistent
    buffers, then submodules in registration order (iteratively, depth-limited)."""
    if not isinstance(root, StubObject) or "_modules" not in root.__dict__:
        raise DataError("checkpoint does not hold a pickled torch module")
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    todo: list[tuple[Any, str, int]] = [(root, "", 0)]
    visited = 0
    while todo:
        module, prefix, depth = todo.pop()
        if id(module) in seen or not isinstance(module, StubObject):
            continue
        seen.add(id(module))
        visited += 1
        if depth > MAX_DEPTH or visited > MAX_MODULES:
            raise DataError(
                f"checkpoint modules nest deeper than {MAX_DEPTH} or number over {MAX_MODULES}"
            )
        state = _state(module)
        where = prefix[:-1]
        for name, tensor in _named(state.get("_parameters"), "_parameters", where):
            if tensor is not None:
                out[prefix + name] = _plain(tensor, prefix + name)
        transient = state.get("_non_persistent_buffers_set") or ()
        if not isinstance(transient, (set, frozenset, list, tuple)):
            raise DataError(f"checkpoint module {where or '<root>'}: malformed buffer set")
        for name, tensor in _named(state.get("_buffers"), "_buffers", where):
            if tensor is not None and name not in transient:
                out[prefix + name] = _plain(tensor, prefix + name)
        children = _named(state.get("_modules"), "_modules", where)
        for name, child in reversed(children):  # stack: first child is walked first
            if child is not None:
                todo.append((child, f"{prefix}{name}.", depth + 1))
    return out


def _plain(value: Any, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise DataError(f"checkpoint entry {name} is not a tensor")
    return value.detach().clone()


def import_checkpoint_here(path: Path) -> dict[str, torch.Tensor]:
    """``import_checkpoint`` in this process (what the sandboxed child runs)."""
    path = Path(path)
    state = collect_state_dict(load_stub_tree(path))
    state.pop("text_model.model.embeddings.position_ids", None)
    if not state:
        raise DataError(f"checkpoint {path} holds no tensors")
    return state


_STATE_FILE = "state.safetensors"
_ORDER_FILE = "order.json"


def _import_into(source: str, folder: str) -> None:
    """Sandbox target: import ``source`` and write it into ``folder`` as safetensors."""
    state = import_checkpoint_here(Path(source))
    save_safetensors(state, Path(folder) / _STATE_FILE)
    (Path(folder) / _ORDER_FILE).write_text(json.dumps(list(state)))


def checkpoint_limits(file_size: int) -> Limits:
    """What importing a checkpoint of ``file_size`` bytes may use (torch itself ~0.7 GB)."""
    return Limits(
        address_space=(2 << 30) + 4 * file_size,
        cpu_seconds=120 + file_size // (10 << 20),
        wall_seconds=300.0 + file_size / (2 << 20),
        file_size=2 * file_size + (16 << 20),
    )


def import_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of an official whole-model CIDer checkpoint, read without executing it.

    The file is parsed in a resource-limited child process (module docstring) that writes
    safetensors; ``text_model.model.embeddings.position_ids`` (a constant buffer older
    transformers stored) is dropped so the result loads strictly into the port.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise DataError(f"checkpoint not found: {path}")
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
    folder = Path(tempfile.mkdtemp(prefix="mer_bench_checkpoint-"))
    try:
        try:
            run_sandboxed(
                "cider.checkpoint:_import_into",
                [str(path.resolve()), str(folder)],
                checkpoint_limits(size),
                cwd=folder,
            )
        except SandboxError as exc:
            text = str(exc)
            raise DataError(text if str(path.resolve()) in text else f"{path}: {text}") from None
        order = json.loads((folder / _ORDER_FILE).read_text())
        state = load_file(str(folder / _STATE_FILE))
        return {name: state[name] for name in order}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def save_safetensors(state: Mapping[str, torch.Tensor], out: Path) -> None:
    """Write a flat tensor dict (contiguous, unshared copies) as safetensors."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(out))
