"""What the two readers of untrusted pickles share: checked container opcodes and refusals.

Data files (``mer_bench.data.safe_pickle``) and CIDer checkpoints (``cider.checkpoint``) are
both read by CPython's pure-Python unpickler with its container opcodes replaced by checked
ones, so that nothing a file builds is hashed or extended unless it is a plain value of ours:

- ``DICT``, ``SETITEM(S)``: keys go through the reader's key check, items only go onto the
  container types the reader lists, and an odd number of keys and values is refused;
- ``APPEND(S)``, ``ADDITEMS``: only onto the reader's list and set types; ``ADDITEMS`` and
  ``FROZENSET`` items go through the reader's set item check;
- ``BYTEARRAY8``: pickle's own handler allocates the declared length before reading it (a
  20-byte file could ask for a terabyte), so the bytes are read first, bounded by the stream;
- opcodes that build class instances or refer to objects outside the file (``INST``, ``OBJ``,
  the extension registry, out-of-band buffers, plus whatever a reader adds) are refused.

Each reader subclasses :class:`RestrictedUnpickler` and says what differs: the key and set item
checks, which container types may receive items, the wording of its refusals, and the extra
opcodes it refuses. This module imports nothing of mer_bench but its errors, so both readers
(and ``cider``, which may import mer_bench but not the other way round) can use it.
"""

from __future__ import annotations

import pickle
import struct
from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from mer_bench.errors import DataError

__all__ = ["RestrictedUnpickler", "quote"]


def quote(value: Any, limit: int = 80) -> str:
    """A short description of a file-supplied value: its type, and for text its first characters.

    Never calls ``repr``/``str`` on containers (their repr can be exponential in the file size).
    """
    if isinstance(value, (str, bytes, bytearray)):
        head = value[:limit]
        text = head.decode("latin1") if isinstance(head, (bytes, bytearray)) else head
        text = "".join(c if c.isprintable() else "?" for c in text)
        more = "…" if len(value) > limit else ""
        return f"{type(value).__name__} '{text}{more}'"
    if isinstance(value, (bool, type(None))):
        return str(value)
    if isinstance(value, int):
        return f"int {value}" if value.bit_length() <= 64 else "a very large int"
    if isinstance(value, float):
        return f"float {value!r}"
    return f"a {type(value).__name__}"


_Handler = Callable[[Any], None]
_PICKLE_DISPATCH: dict[int, _Handler] = pickle._Unpickler.dispatch  # type: ignore[attr-defined]


def _opcode_refusal(name: str) -> _Handler:
    def refuse(self: RestrictedUnpickler) -> None:
        raise self._refusal(
            f"uses the pickle opcode {name}, which builds class instances or refers to "
            "objects outside the file"
        )

    return refuse


def _refuse_opcodes(dispatch: dict[int, _Handler], names: tuple[str, ...]) -> None:
    for name in names:
        dispatch[getattr(pickle, name)[0]] = _opcode_refusal(name)


class RestrictedUnpickler(pickle._Unpickler, metaclass=ABCMeta):  # type: ignore[name-defined,misc]
    """Pure-Python unpickler whose container opcodes only touch containers the reader allows.

    A subclass gives ``_key`` and ``_set_item`` (return the value if it may be hashed, else
    raise ``DataError``), and may change the class attributes below, ``_accepts`` (exact types
    by default) and ``_refusal`` (the wording of a refusal). It starts its own dispatch table
    with ``dispatch = RestrictedUnpickler.dispatch.copy()``; its ``refused_opcodes`` are applied
    to that table after the class body, so a refusal always wins over a handler.
    """

    dispatch: ClassVar[dict[int, _Handler]] = _PICKLE_DISPATCH.copy()

    refused_opcodes: ClassVar[tuple[str, ...]] = (
        "INST",
        "OBJ",
        "EXT1",
        "EXT2",
        "EXT4",
        "NEXT_BUFFER",
        "READONLY_BUFFER",
    )
    """Names of the pickle opcodes the reader refuses outright (a subclass adds to these; a table
    copied from this class keeps refusing them whatever the subclass lists)."""
    dict_targets: ClassVar[tuple[type, ...]] = (dict,)
    """Types that ``SETITEM``/``SETITEMS`` may set items on."""
    list_targets: ClassVar[tuple[type, ...]] = (list,)
    """Types that ``APPEND``/``APPENDS`` may append to."""
    set_targets: ClassVar[tuple[type, ...]] = (set,)
    """Types that ``ADDITEMS`` may add to."""
    refusal_format: ClassVar[str] = "refused: the file {}"
    """How a refusal reads; ``{}`` is a phrase such as ``appends to a dict``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "dispatch" not in vars(cls):  # never refuse opcodes in a parent's table
            cls.dispatch = cls.dispatch.copy()
        _refuse_opcodes(cls.dispatch, cls.refused_opcodes)

    # --- what each reader decides

    @abstractmethod
    def _key(self, key: Any) -> Any:
        """``key`` if the file may use it as a dict key, else raise ``DataError``."""

    @abstractmethod
    def _set_item(self, item: Any) -> Any:
        """``item`` if the file may put it in a set or frozenset, else raise ``DataError``."""

    def _accepts(self, target: Any, kinds: tuple[type, ...]) -> bool:
        """Whether ``target`` may receive items: its exact type is one of ``kinds``."""
        return type(target) in kinds

    def _refusal(self, what: str) -> DataError:
        return DataError(self.refusal_format.format(what))

    # --- checked container opcodes

    def _target(self, kinds: tuple[type, ...], action: str) -> Any:
        target = self.stack[-1]
        if not self._accepts(target, kinds):
            raise self._refusal(f"{action} {quote(target)}")
        return target

    def _pairs(self, items: list) -> range:
        if len(items) % 2:
            raise self._refusal("gives a dict an odd number of keys and values")
        return range(0, len(items), 2)

    def _load_dict(self) -> None:
        items = self.pop_mark()
        self.append({self._key(items[i]): items[i + 1] for i in self._pairs(items)})

    def _load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._target(self.dict_targets, "sets an item on")[self._key(key)] = value

    def _load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._target(self.dict_targets, "sets items on")
        for i in self._pairs(items):
            target[self._key(items[i])] = items[i + 1]

    def _load_append(self) -> None:
        value = self.stack.pop()
        self._target(self.list_targets, "appends to").append(value)

    def _load_appends(self) -> None:
        items = self.pop_mark()
        self._target(self.list_targets, "appends to").extend(items)

    def _load_additems(self) -> None:
        items = self.pop_mark()
        target = self._target(self.set_targets, "adds set items to")
        target.update([self._set_item(item) for item in items])

    def _load_frozenset(self) -> None:
        items = self.pop_mark()  # first: it rebinds self.append to the outer stack
        self.append(frozenset([self._set_item(item) for item in items]))

    # --- byte strings of a declared length

    def _byte_string(self, n: int) -> Any:
        """The next ``n`` bytes, read (never allocated) before their length is trusted."""
        data = self.read(n)
        if len(data) != n:
            raise EOFError(f"the pickle declares {n} bytes where {len(data)} follow")
        return data

    def _load_bytearray8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        data = self._byte_string(n)
        # A reader's _byte_string may return a placeholder (a string streamed to disk): keep it.
        self.append(bytearray(data) if isinstance(data, (bytes, bytearray)) else data)

    dispatch[pickle.DICT[0]] = _load_dict
    dispatch[pickle.SETITEM[0]] = _load_setitem
    dispatch[pickle.SETITEMS[0]] = _load_setitems
    dispatch[pickle.APPEND[0]] = _load_append
    dispatch[pickle.APPENDS[0]] = _load_appends
    dispatch[pickle.ADDITEMS[0]] = _load_additems
    dispatch[pickle.FROZENSET[0]] = _load_frozenset
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8
    _refuse_opcodes(dispatch, refused_opcodes)
