"""Importing whole pickled reference models without executing them (cider.checkpoint)."""

from __future__ import annotations

import copy
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from cider.checkpoint import import_checkpoint, save_safetensors
from cider.model import CIDerConfig, CIDerModel
from mer_bench.errors import DataError
from mer_bench.text_encoder import build_text_encoder

FAKE_MODULES = ("src", "src.models", "modules", "modules.transformer", "evil_payload")
TRANSFORMER_CLASSES = {
    "MultimodalTransformer",
    "EncoderLayer",
    "MultimodalMultiheadAttention",
    "SinusoidalPositions",
}


def _small_model() -> CIDerModel:
    torch.manual_seed(0)
    cfg = CIDerConfig(
        text_dim=32,
        audio_dim=5,
        vision_dim=7,
        text_len=6,
        audio_len=9,
        vision_len=8,
        num_classes=3,
        aligned=False,
        embed_dim=8,
        num_layers=1,
        num_heads=2,
    )
    return CIDerModel(cfg, build_text_encoder(None, vocab_size=300))


@pytest.fixture
def fake_reference():
    """Throwaway modules named like the reference's, removed again after saving."""
    mods = {name: types.ModuleType(name) for name in FAKE_MODULES}
    sys.modules.update(mods)
    yield mods
    for name in FAKE_MODULES:
        sys.modules.pop(name, None)


def _as_reference(model: nn.Module, mods: dict) -> nn.Module:
    """Deep copy whose cider classes are re-homed in ``src.models`` / ``modules.transformer``."""
    clone = copy.deepcopy(model)
    made: dict[str, type] = {}
    for module in clone.modules():
        cls = type(module)
        if not cls.__module__.startswith(("cider.", "mer_bench.")):
            continue
        home = "modules.transformer" if cls.__name__ in TRANSFORMER_CLASSES else "src.models"
        name = "CIDERModel" if cls is CIDerModel else cls.__name__
        if name not in made:
            fake = type(name, (nn.Module,), {"forward": cls.forward})
            fake.__module__ = home
            setattr(mods[home], name, fake)
            made[name] = fake
        module.__class__ = made[name]
    # The reference keeps its hyperparameters as plain attributes; re-home our config object.
    hyp = type("Hyp", (), {})
    hyp.__module__ = "src.models"
    mods["src.models"].Hyp = hyp
    holder = hyp()
    holder.__dict__.update(vars(model.cfg))
    clone.__dict__["cfg"] = holder
    return clone


def _save(obj: object, path: Path) -> None:
    torch.save(obj, path)
    for name in FAKE_MODULES:
        sys.modules.pop(name, None)


def test_import_matches_state_dict(tmp_path: Path, fake_reference) -> None:
    model = _small_model()
    ref = _as_reference(model, fake_reference)
    ref.register_buffer("scratch", torch.ones(2), persistent=False)
    path = tmp_path / "mosi_unaligned_iid_binary_CIDER.pt"
    _save(ref, path)
    assert "src.models" not in sys.modules
    state = import_checkpoint(path)
    expected = model.state_dict()
    assert list(state) == list(expected)
    assert "scratch" not in state
    for k, v in expected.items():
        assert torch.equal(state[k], v), k
    assert any(k.startswith("text_model.model.encoder.") for k in state)
    fresh = _small_model()
    fresh.load_state_dict(state, strict=True)
    out = tmp_path / "w.safetensors"
    save_safetensors(state, out)
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(out))["proj_a.weight"], expected["proj_a.weight"])


def _write_marker(path: str) -> None:
    Path(path).write_text("pwned")


class _Payload:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("kind", ["function", "os_system", "exec", "getattr"])
def test_hostile_checkpoint_refused(tmp_path: Path, fake_reference, kind: str) -> None:
    marker = tmp_path / "marker"
    evil = fake_reference["evil_payload"]
    evil.write_marker = _write_marker
    _write_marker.__module__ = "evil_payload"
    _write_marker.__qualname__ = "write_marker"
    payloads = {
        "function": _Payload(evil.write_marker, (str(marker),)),
        "os_system": _Payload(os.system, (f"touch {marker}",)),
        "exec": _Payload(exec, (f"open({str(marker)!r}, 'w').write('x')",)),
        "getattr": _Payload(getattr, ("text", "upper")),
    }
    ref = _as_reference(_small_model(), fake_reference)
    ref.hook = payloads[kind]
    path = tmp_path / "evil.pt"
    _save(ref, path)
    with pytest.raises(DataError, match="not allowed"):
        import_checkpoint(path)
    assert not marker.exists()


def test_reference_namespace_functions_are_inert(tmp_path: Path, fake_reference) -> None:
    marker = tmp_path / "marker"
    models = fake_reference["src.models"]
    models.write_marker = _write_marker
    _write_marker.__module__ = "src.models"
    _write_marker.__qualname__ = "write_marker"
    ref = _as_reference(_small_model(), fake_reference)
    ref.hook = _Payload(models.write_marker, (str(marker),))
    path = tmp_path / "stubbed.pt"
    _save(ref, path)
    state = import_checkpoint(path)  # the call becomes an inert stub instance
    assert "proj_l.weight" in state
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError):
        import_checkpoint(bad)
    with pytest.raises(DataError):
        import_checkpoint(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- hostile zips


def _hostile(kind: str, tmp_path: Path) -> Path:
    import collections
    import zipfile

    from tests.cider import hostile_checkpoints as hc

    s6 = hc.StorageRef("0", 6)
    storages = {"0": hc.floats(6)}
    params: dict = {"w": hc.tensor(s6, (2, 3), (3, 1))}
    modules: object = {}
    compress = zipfile.ZIP_STORED
    if kind == "zero_stride":
        params = {"w": hc.tensor(hc.StorageRef("0", 1), (1 << 31,), (0,))}
        storages = {"0": hc.floats(1)}
    elif kind == "overlapping_views":
        big = hc.StorageRef("0", 1 << 18)
        storages = {"0": hc.floats(1 << 18)}
        params = {f"w{i}": hc.tensor(big, (1 << 18,), (1,)) for i in range(8)}
    elif kind == "negative_stride":
        params = {"w": hc.tensor(s6, (2, 3), (-3, 1))}
    elif kind == "negative_offset":
        params = {"w": hc.tensor(s6, (3,), (1,), -3)}
    elif kind == "past_the_end":
        params = {"w": hc.tensor(s6, (2, 3), (3, 1), 1)}
    elif kind == "storage_constructor":
        params = {"w": hc.Reduce(torch.FloatStorage, (1 << 20,))}
    elif kind == "short_member":
        storages = {"0": hc.floats(5)}
    elif kind == "bzip2_member":
        storages = {"0": b"\x00" * (64 << 20)}
        params = {"w": hc.tensor(hc.StorageRef("0", 16 << 20), (16 << 20,), (1,))}
        compress = zipfile.ZIP_BZIP2
    elif kind == "int_name":
        params = {0: hc.tensor(s6, (6,), (1,))}
    elif kind == "list_modules":
        modules = [hc.module()]
    elif kind == "deep_modules":
        child = hc.module({"w": hc.tensor(s6, (6,), (1,))})
        for _ in range(100):
            child = hc.module(modules={"m": child})
        modules = {"m": child}
    elif kind == "xla_storage":
        params = {"w": hc.tensor(hc.StorageRef("0", 6, location="xla:0"), (6,), (1,))}
    elif kind == "xla_device":
        params = {"w": hc.tensor(s6, (6,), (1,)), "d": torch.device("meta")}
    elif kind == "build_on_dict":
        params = {"w": hc.Reduce(collections.OrderedDict, (), {"x": 1})}
    elif kind == "tuple_key":
        params = {"w": hc.tensor(s6, (6,), (1,)), ((1, 2), (3, 4)): None}
    root = hc.module(params, modules)
    return hc.write_checkpoint(tmp_path / f"{kind}.pt", root, storages, compress)


HOSTILE = {
    "zero_stride": "does not fit its storage",
    "overlapping_views": "repeat their storages",
    "negative_stride": "malformed size, stride or offset",
    "negative_offset": "malformed size, stride or offset",
    "past_the_end": "does not fit its storage",
    "storage_constructor": "cannot read checkpoint",
    "short_member": "holds 20 bytes, the pickle declares 24",
    "bzip2_member": "is compressed",
    "int_name": "_parameters name int 0",
    "list_modules": "_modules is not a dict",
    "deep_modules": "nest deeper than",
    "xla_storage": "only cpu and cuda are read",
    "xla_device": "device str 'meta'",
    "build_on_dict": "sets the state of",
    "tuple_key": "as a dict key",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_checkpoint_structures_are_refused(tmp_path: Path, kind: str) -> None:
    from cider.checkpoint import import_checkpoint_here

    path = _hostile(kind, tmp_path)
    with pytest.raises(DataError, match=HOSTILE[kind].replace("(", r"\(")) as err:
        import_checkpoint_here(path)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_cuda_storages_load_on_the_cpu(tmp_path: Path) -> None:
    from cider.checkpoint import import_checkpoint_here
    from tests.cider import hostile_checkpoints as hc

    root = hc.module({"w": hc.tensor(hc.StorageRef("0", 6, location="cuda:0"), (2, 3), (3, 1))})
    path = hc.write_checkpoint(tmp_path / "cuda.pt", root, {"0": hc.floats(6)})
    state = import_checkpoint_here(path)
    assert state["w"].device.type == "cpu" and state["w"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_torch_names_resolve_without_importing_modules() -> None:
    import zipfile

    from cider.checkpoint import _RestrictedUnpickler

    before = set(sys.modules)
    with zipfile.ZipFile(__import__("io").BytesIO(), "w") as archive:
        unpickler = _RestrictedUnpickler(b"", archive, "")
        for name in ("onnx", "hub", "_dynamo", "distributions", "FloatStorage"):
            try:
                unpickler.find_class("torch", name)
            except DataError:
                pass
    assert set(sys.modules) == before


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zero_stride", "bzip2_member"])
def test_import_checkpoint_cli_prints_one_error_line(tmp_path: Path, kind: str) -> None:
    import resource
    import subprocess

    from tests.conftest import ROOT, subprocess_env

    path = _hostile(kind, tmp_path)
    script = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run([sys.executable, '-m', 'mer_bench', 'import-checkpoint', sys.argv[1],"
        " '--out', sys.argv[2]], capture_output=True, text=True)\n"
        "sys.stderr.write(p.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
        "sys.exit(p.returncode)\n"
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    proc = subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "out.safetensors")],
        capture_output=True, text=True, cwd=ROOT, env=subprocess_env(), timeout=300,
        preexec_fn=limit,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert HOSTILE[kind] in lines[0]
    assert int(proc.stdout.strip()) < 1500  # MB: torch itself is ~0.3-0.7 GB
    assert not (tmp_path / "out.safetensors").exists()


def test_declared_bytearray_length_is_not_allocated(tmp_path: Path) -> None:
    """BYTEARRAY8 declaring 1 TiB in a 20-byte data.pkl (pickle itself allocates it first)."""
    import struct
    import zipfile

    from cider.checkpoint import import_checkpoint_here

    path = tmp_path / "bytearray.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x05\x96" + struct.pack("<Q", 1 << 40) + b".")
    with pytest.raises(DataError, match="declares 1099511627776 bytes"):
        import_checkpoint_here(path)
