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
