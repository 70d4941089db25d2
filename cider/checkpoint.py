"""Import official CIDer checkpoints (whole pickled modules, CIDER.md §4.4, Q-24) safely.

The reference saves ``torch.save(model)``: a zip whose ``data.pkl`` references the reference's
classes (``src.models.CIDERModel``, ``modules.transformer.*``), transformers' BERT/tokenizer,
``torch.nn`` modules and a few functions. Nothing from the file is executed here:

- classes of the known model namespaces become inert stub classes whose instances only record
  the pickled state (``__dict__``) and constructor arguments;
- only torch's tensor-rebuild functions, storage/dtype names and a few harmless builtins resolve
  to real objects;
- every other global (``os.system``, ``builtins.eval``, ``subprocess.*``, any unknown module)
  is refused with ``DataError`` before anything runs.

The stub module tree is then walked (``_modules``, ``_parameters``, persistent ``_buffers``) to
collect the state dict under the reference names (BERT under ``text_model.model.``).
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

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


def _real_globals() -> dict[tuple[str, str], Any]:
    import torch._utils as tu

    allowed: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): tu._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): tu._rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): tu._rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "tuple"): tuple,
        ("builtins", "list"): list,
        ("builtins", "dict"): dict,
        ("builtins", "complex"): complex,
        ("builtins", "slice"): slice,
        ("builtins", "bytearray"): bytearray,
        ("_codecs", "encode"): _codecs_encode,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
    }
    return allowed


def _rebuild_from_type(func: Any, _new_type: Any, args: tuple, _state: Any) -> Any:
    """Safe stand-in for ``torch._tensor._rebuild_from_type_v2`` (tensors that carry Python
    attributes, e.g. transformers' ``_is_hf_initialized``): rebuild the tensor with the
    (already vetted) ``func`` and drop the subclass and attribute state."""
    return func(*args)


def _codecs_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """The protocol-2 bytes round trip (``_codecs.encode(str, 'latin1')``), limited to text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise DataError("checkpoint uses _codecs.encode in an unexpected way")
    return text.encode(encoding, errors)


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
                self.__dict__.update(slots)
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_stub_state"] = state

    # Pickled containers (ModuleList/Sequential keep their items in _modules, but a stubbed
    # dict/list subclass may receive SETITEM/APPEND): record them instead of failing.
    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_stub_items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("_stub_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("_stub_list", []).extend(values)

    def __repr__(self) -> str:
        return f"<stub {self._stub_name}>"


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._allowed = _real_globals()
        self._stubs: dict[tuple[str, str], type] = {}
        self._storages: dict[str, torch.storage.TypedStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles name Python 2 modules (``__builtin__.set``); map them as pickle does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        key = (module, name)
        if key in self._allowed:
            return self._allowed[key]
        if module == "torch" and name in _STORAGE_DTYPES:
            return getattr(torch, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        # torch.Tensor only appears as the target type of _rebuild_from_type_v2 (ignored).
        stubbed = module.startswith(STUB_PREFIXES) or module in ("src", "modules", "tokenizers")
        if stubbed or key == ("torch", "Tensor"):
            if key not in self._stubs:
                self._stubs[key] = type(name, (StubObject,), {"_stub_name": f"{module}.{name}"})
            return self._stubs[key]
        raise DataError(f"checkpoint refers to {module}.{name}, which is not allowed (refused)")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise DataError(f"checkpoint has an unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if isinstance(storage_type, type) and storage_type.__name__ in _STORAGE_DTYPES:
            dtype = _STORAGE_DTYPES[storage_type.__name__]
        else:
            raise DataError("checkpoint storage has an unexpected type")
        key = str(key)
        if key not in self._storages:
            try:
                raw = self._archive.read(f"{self._prefix}data/{key}")
            except KeyError:
                raise DataError(f"checkpoint lacks the storage record data/{key}") from None
            itemsize = torch.empty((), dtype=dtype).element_size()
            if len(raw) < int(numel) * itemsize:
                raise DataError(f"checkpoint storage data/{key} is truncated")
            flat = torch.frombuffer(bytearray(raw[: int(numel) * itemsize]), dtype=dtype)
            self._storages[key] = torch.storage.TypedStorage(
                wrap_storage=flat.untyped_storage(), dtype=dtype, _internal=True
            )
        return self._storages[key]


def _pickle_record(archive: zipfile.ZipFile) -> tuple[bytes, str]:
    names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(names) != 1:
        raise DataError("not a torch.save zip checkpoint (no unique */data.pkl)")
    prefix = names[0][: -len("data.pkl")]
    order = f"{prefix}byteorder"
    if order in archive.namelist() and archive.read(order).strip() != b"little":
        raise DataError("big-endian checkpoints are not supported")
    return archive.read(names[0]), prefix


def load_stub_tree(path: Path) -> Any:
    """The unpickled object graph of a ``torch.save`` zip, with every class stubbed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            data, prefix = _pickle_record(archive)
            return _RestrictedUnpickler(data, archive, prefix).load()
    except zipfile.BadZipFile:
        raise DataError(f"{path} is not a torch.save zip checkpoint") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as exc:
        raise DataError(f"cannot read checkpoint {path}: {exc}") from None


def _state(obj: Any) -> Mapping[str, Any]:
    return obj.__dict__ if isinstance(obj, StubObject) else {}


def collect_state_dict(root: Any) -> dict[str, torch.Tensor]:
    """Walk a stub module tree like ``nn.Module.state_dict``: own parameters, persistent
    buffers, then submodules in registration order."""
    out: dict[str, torch.Tensor] = {}

    def walk(module: Any, prefix: str, seen: frozenset[int]) -> None:
        if id(module) in seen:
            return
        seen = seen | {id(module)}
        state = _state(module)
        for name, tensor in (state.get("_parameters") or {}).items():
            if tensor is not None:
                out[prefix + name] = _plain(tensor, prefix + name)
        transient = set(state.get("_non_persistent_buffers_set") or ())
        for name, tensor in (state.get("_buffers") or {}).items():
            if tensor is not None and name not in transient:
                out[prefix + name] = _plain(tensor, prefix + name)
        for name, child in (state.get("_modules") or {}).items():
            if child is not None:
                walk(child, f"{prefix}{name}.", seen)

    if not isinstance(root, StubObject) or "_modules" not in root.__dict__:
        raise DataError("checkpoint does not hold a pickled torch module")
    walk(root, "", frozenset())
    return out


def _plain(value: Any, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise DataError(f"checkpoint entry {name} is not a tensor")
    return value.detach().clone()


def import_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of an official whole-model CIDer checkpoint, read without executing it.

    ``text_model.model.embeddings.position_ids`` (a constant buffer older transformers stored,
    CIDER.md §4.3) is dropped so the result loads strictly into the port.
    """
    state = collect_state_dict(load_stub_tree(path))
    state.pop("text_model.model.embeddings.position_ids", None)
    if not state:
        raise DataError(f"checkpoint {path} holds no tensors")
    return state


def save_safetensors(state: Mapping[str, torch.Tensor], out: Path) -> None:
    """Write a flat tensor dict (contiguous, unshared copies) as safetensors."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(out))
