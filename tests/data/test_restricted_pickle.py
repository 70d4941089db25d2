"""The shared container checks: the data-file and checkpoint readers refuse the same things.

Each hostile pickle is read as an MMSA data file (``load_untrusted``) and as the ``data.pkl`` of
a ``torch.save`` zip (``load_stub_tree``); both must refuse it with one line naming the cause.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from cider.checkpoint import _RestrictedUnpickler as CheckpointUnpickler
from cider.checkpoint import load_stub_tree
from mer_bench.data.restricted_pickle import RestrictedUnpickler
from mer_bench.data.safe_pickle import _RestrictedUnpickler as DataUnpickler
from mer_bench.data.safe_pickle import load_untrusted
from mer_bench.errors import DataError

_HEAD = b"\x80\x05"
_TUPLE_12 = b"K\x01K\x02\x86"  # the tuple (1, 2): hashable, so never to be used as a key
_KEY = b"\x8c\x01k"  # the str 'k'

# name: (pickle body, fragment of both refusals, the checkpoint's fragment where it differs)
SHARED = {
    "setitem_on_list": (b"]" + _KEY + b"K\x01s", "sets an item on a list", None),
    "setitems_on_list": (b"](" + _KEY + b"K\x01u", "sets items on a list", None),
    "append_to_dict": (b"}K\x01a", "appends to a dict", None),
    "appends_to_dict": (b"}(K\x01e", "appends to a dict", None),
    "additems_to_list": (b"](K\x01\x90", "adds set items to a list", None),
    "tuple_key_dict": (b"(" + _TUPLE_12 + b"Nd", "keys must be str", "as a dict key"),
    "tuple_key_setitem": (b"}" + _TUPLE_12 + b"Ns", "keys must be str", "as a dict key"),
    "tuple_key_setitems": (b"}(" + _TUPLE_12 + b"Nu", "keys must be str", "as a dict key"),
    "tuple_in_frozenset": (b"(" + _TUPLE_12 + b"\x91", "set item that is a tuple", "set item"),
    "tuple_in_set": (b"\x8f(" + _TUPLE_12 + b"\x90", "set item that is a tuple", "set item"),
    "odd_dict": (b"(" + _KEY + b"d", "odd number of keys and values", None),
    "odd_setitems": (b"}(" + _KEY + b"u", "odd number of keys and values", None),
    "bytearray8_short": (b"\x96" + struct.pack("<Q", 1000) + b"abc", "declares 1000 bytes", None),
    "bytearray8_huge": (b"\x96" + struct.pack("<Q", 1 << 40), "declares 1099511627776", None),
    "ext1": (b"\x82\x01", "pickle opcode EXT1", None),
    "inst": (b"(ios\nsystem\n", "pickle opcode INST", None),
    "obj": (b"(cbuiltins\nset\no", "pickle opcode OBJ", None),
    "next_buffer": (b"\x97", "pickle opcode NEXT_BUFFER", None),
    "readonly_buffer": (b"]\x98", "pickle opcode READONLY_BUFFER", None),
}


def _as_data_file(body: bytes, tmp_path: Path) -> Any:
    path = tmp_path / "f.pkl"
    path.write_bytes(_HEAD + body + b".")
    return load_untrusted(path)


def _as_checkpoint(body: bytes, tmp_path: Path) -> Any:
    path = tmp_path / "f.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", _HEAD + body + b".")
    return load_stub_tree(path)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_both_readers_refuse_the_same_container_operations(tmp_path: Path, name: str) -> None:
    body, data_fragment, checkpoint_fragment = SHARED[name]
    for read, fragment in (
        (_as_data_file, data_fragment),
        (_as_checkpoint, checkpoint_fragment or data_fragment),
    ):
        with pytest.raises(DataError) as err:
            read(body, tmp_path)
        message = str(err.value)
        assert "\n" not in message and len(message) < 400, message
        assert fragment in message, (read.__name__, message)


def test_the_readers_keep_their_own_key_rules(tmp_path: Path) -> None:
    """A checkpoint may key a dict by an int (module state does); a data file may not."""
    body = b"(K\x01K\x02d"
    assert _as_checkpoint(body, tmp_path) == {1: 2}
    with pytest.raises(DataError, match="keys must be str"):
        _as_data_file(body, tmp_path)


def test_well_formed_containers_still_load_in_both(tmp_path: Path) -> None:
    value = {"a": [1, 2, bytearray(b"xy")], "b": {3, "s"}, "c": frozenset({4.5})}
    body = pickle.dumps(value, protocol=5)[2:-1]
    assert _as_data_file(body, tmp_path) == value
    assert _as_checkpoint(body, tmp_path) == value


def test_refused_opcodes_stay_with_their_reader() -> None:
    """Data files refuse persistent ids; checkpoints need them for storages."""
    binpersid = pickle.BINPERSID[0]
    base = pickle._Unpickler.dispatch[binpersid]  # type: ignore[attr-defined]
    assert RestrictedUnpickler.dispatch[binpersid] is base
    assert CheckpointUnpickler.dispatch[binpersid] is base
    assert DataUnpickler.dispatch[binpersid] is not base
    with pytest.raises(TypeError):
        RestrictedUnpickler(None)  # type: ignore[abstract]
