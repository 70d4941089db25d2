"""State-dict names, shapes, kinds and counts against the reference (docs/cider.md item 1)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cider.model import CIDerConfig, CIDerModel
from mer_bench.protocol import Task
from tests.conftest import REFERENCE_DIR

from .helpers import make_ctx, make_split

TSV = REFERENCE_DIR / "cider_state_dict_mosi_unaligned_binary_L3.tsv"


class StubBert(nn.Module):
    """Stands in for BERT-base (only its hidden size matters for the non-BERT keys)."""

    def __init__(self, hidden: int = 768) -> None:
        super().__init__()
        self.config = SimpleNamespace(hidden_size=hidden, vocab_size=30522)


def non_bert_rows(model: nn.Module) -> list[tuple[str, str, str]]:
    params = dict(model.named_parameters())
    return [
        (name, "x".join(str(s) for s in t.shape), "param" if name in params else "buffer")
        for name, t in model.state_dict().items()
        if not name.startswith("text_model.")
    ]


def non_bert_params(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("text_model."))


def build(**kw: object) -> CIDerModel:
    return CIDerModel(CIDerConfig(**kw), StubBert())  # type: ignore[arg-type]


MOSI_UNALIGNED = dict(
    text_dim=768,
    audio_dim=5,
    vision_dim=20,
    text_len=50,
    audio_len=375,
    vision_len=500,
    aligned=False,
)


def test_tsv_exact_names_shapes_kinds_and_order() -> None:
    ref = [tuple(line.rstrip("\n").split("\t")) for line in TSV.read_text().splitlines()[1:]]
    model = build(**MOSI_UNALIGNED, num_classes=3, num_layers=3, num_heads=8)
    rows = non_bert_rows(model)
    assert len(ref) == 173
    assert rows == ref
    assert non_bert_params(model) == 276_566


@pytest.mark.parametrize(
    ("config", "expected_params", "expected_keys"),
    [
        (
            dict(
                text_dim=768,
                audio_dim=5,
                vision_dim=20,
                text_len=50,
                audio_len=50,
                vision_len=50,
                aligned=True,
                num_classes=7,
                num_layers=3,
            ),
            244_761,
            181,
        ),
        (
            dict(
                text_dim=768,
                audio_dim=74,
                vision_dim=35,
                text_len=50,
                audio_len=500,
                vision_len=500,
                aligned=False,
                num_classes=7,
                num_layers=3,
            ),
            298_809,
            181,
        ),
        (
            dict(
                text_dim=768,
                audio_dim=25,
                vision_dim=171,
                text_len=44,
                audio_len=44,
                vision_len=44,
                aligned=True,
                cross_dataset=True,
                num_classes=3,
                num_layers=3,
            ),
            252_488,
            173,
        ),
        (
            dict(
                text_dim=768,
                audio_dim=25,
                vision_dim=171,
                text_len=75,
                audio_len=75,
                vision_len=75,
                aligned=True,
                cross_dataset=True,
                num_classes=7,
                num_layers=1,
            ),
            202_688,
            117,
        ),
    ],
)
def test_reference_totals(config: dict, expected_params: int, expected_keys: int) -> None:
    model = build(**config)
    assert non_bert_params(model) == expected_params
    rows = non_bert_rows(model)
    layers, classes = config["num_layers"], config["num_classes"]
    assert len(rows) == expected_keys == 71 + 32 * layers + 2 * classes
    names = {r[0] for r in rows}
    kinds = {r[0]: r[2] for r in rows}
    assert kinds["multimodal_transformer.version"] == "buffer"
    assert kinds["multimodal_transformer.embed_positions.pe"] == "buffer"
    assert sum(k == "buffer" for k in kinds.values()) == 2
    # Compression modules always exist.
    assert "a_compress.in_proj_weight" in names and "v_compress.out_proj.bias" in names
    cross_idx, plain_idx = ("0", "3", "6"), ("0", "2", "4")
    want = cross_idx if config.get("cross_dataset") else plain_idx
    for m in ("a", "v"):
        got = sorted({n.split(".")[1] for n in names if n.startswith(f"cls_encoders_{m}.")})
        assert tuple(got) == want
    assert sorted({n.split(".")[1] for n in names if n.startswith("cls_encoders_l.")}) == list(
        plain_idx
    )
    shapes = {r[0]: r[1] for r in rows}
    n = config["text_len"]
    assert shapes["recon_audio.0.weight"] == f"{config['audio_len']}x{n}"
    assert shapes["classifiers.0.weight"] == f"{classes}x192"


@pytest.mark.parametrize("heads", [1, 2, 4, 8])
def test_heads_do_not_change_shapes(heads: int) -> None:
    ref = non_bert_rows(build(**MOSI_UNALIGNED, num_classes=3, num_layers=3, num_heads=8))
    model = build(**MOSI_UNALIGNED, num_classes=3, num_layers=3, num_heads=heads)
    assert non_bert_rows(model) == ref
    assert model.multimodal_transformer.layers[0].self_attn.head_dim == 32 // heads


@pytest.mark.parametrize("layers", [1, 2, 4])
def test_layer_count_adds_32_keys(layers: int) -> None:
    model = build(**MOSI_UNALIGNED, num_classes=3, num_layers=layers)
    assert len(non_bert_rows(model)) == 71 + 32 * layers + 6


def test_adapter_model_has_bert_prefix_and_tiny_width() -> None:
    from mer_bench.adapters import get_adapter

    split = make_split(6, n=10, audio_len=12, vision_len=9)
    ctx = make_ctx(split, task=Task.SEVEN, preset="default")
    model = get_adapter("cider")(ctx).model
    keys = list(model.state_dict())
    assert keys[0].startswith("text_model.model.embeddings.")
    assert any(k.startswith("text_model.model.pooler.") for k in keys)
    sd = model.state_dict()
    assert sd["proj_l.weight"].shape == (32, 32, 1)  # tiny BERT: D_l = 32
    assert sd["recon_text.weight"].shape == (32, 32)
    assert sd["classifiers.6.weight"].shape == (7, 192)
    assert len([k for k in keys if not k.startswith("text_model.")]) == 71 + 32 * 3 + 14


def test_positional_table_and_init() -> None:
    model = build(**MOSI_UNALIGNED, num_classes=3, num_layers=1)
    pe = model.multimodal_transformer.embed_positions.pe[0]
    assert pe.shape == (1024, 32)
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0] * 16))
    p, i = 7, 3
    expected = math.sin(p * math.exp(-2 * i * math.log(10000.0) / 32))
    assert abs(float(pe[p, 2 * i]) - expected) < 1e-6
    assert (
        abs(float(pe[p, 2 * i + 1]) - math.cos(p * math.exp(-2 * i * math.log(10000.0) / 32)))
        < 1e-6
    )
    assert float(model.multimodal_transformer.version) == 2.0
    attn = model.multimodal_transformer.layers[0].self_attn
    assert torch.count_nonzero(attn.in_proj_bias) == 0
    assert all(torch.count_nonzero(lin.bias) == 0 for lin in attn.out_proj)
    assert torch.count_nonzero(model.a_compress.out_proj.bias) == 0
    bound = (6 / (32 + 96)) ** 0.5
    assert attn.in_proj_weight.abs().max() <= bound
    assert model.proj_l.bias is None
