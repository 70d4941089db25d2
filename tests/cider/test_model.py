"""Whole-model behaviour: literal-view parity, the positional quirk, the causal head
(docs/cider.md)."""

from __future__ import annotations

import pytest
import torch

from cider.attention import MultimodalMultiheadAttention
from cider.model import CIDerModel, gru_group
from mer_bench.adapters import get_adapter

from .helpers import full_batch, make_ctx, make_split
from .literal_views import literal_forward


def _model(adapter: str = "cider", aligned: bool = False, **overrides: object):
    split = make_split(8, n=10, audio_len=14, vision_len=11, aligned=aligned)
    ad = get_adapter(adapter)(make_ctx(split, aligned=aligned, adapter=adapter, **overrides))
    ad.setup(split)
    return ad, split


def _forward(ad, batch, protos=None, **kw):
    return ad._run(batch, protos or ad._eval_protos, **kw)


@pytest.mark.parametrize("aligned", [False, True])
def test_model_with_literal_views_matches(monkeypatch: pytest.MonkeyPatch, aligned: bool) -> None:
    torch.manual_seed(0)
    ad, split = _model(aligned=aligned, multimodal_layers=2, num_heads=4)
    ad.model.eval()
    batch = full_batch(split)
    with torch.no_grad():
        fast = _forward(ad, batch, reconstruct=True)
        monkeypatch.setattr(MultimodalMultiheadAttention, "forward", literal_forward)
        slow = _forward(ad, batch, reconstruct=True)
    for name in ("pred", "joint_rep", "text_recon", "audio_recon", "vision_recon"):
        assert torch.allclose(getattr(fast, name), getattr(slow, name), atol=1e-5), name
    assert torch.allclose(fast.attn, slow.attn, atol=1e-5)


def test_gru_group_equals_each_gru_alone() -> None:
    torch.manual_seed(1)
    grus = tuple(torch.nn.GRU(6, 6) for _ in range(3))
    xs = tuple(torch.randn(9, 5, 6) for _ in range(3))
    with torch.no_grad():
        grouped = gru_group(grus, xs)
        for gru, x, got in zip(grus, xs, grouped, strict=True):
            assert torch.allclose(gru(x)[0], got, atol=1e-6)


@pytest.mark.parametrize("aligned", [False, True])
def test_inference_path_equals_training_path(aligned: bool) -> None:
    """Without a graph the modality GRUs run grouped (gru_group); with one, as nn.GRU."""
    torch.manual_seed(0)
    ad, split = _model(aligned=aligned)
    ad.model.eval()
    batch = full_batch(split)
    with torch.no_grad():
        grouped = _forward(ad, batch).pred
    plain = _forward(ad, batch).pred.detach()
    assert torch.allclose(grouped, plain, atol=1e-5)
    assert not torch.equal(grouped, torch.zeros_like(grouped))


def test_positions_quirk_cider_vs_fixed() -> None:
    torch.manual_seed(0)
    perm = torch.tensor([3, 1, 7, 0, 2, 6, 5, 4])
    for name, depends_on_order in (("cider", True), ("cider_fixed", False)):
        ad, split = _model(name)
        ad.model.eval()
        batch = full_batch(split)
        with torch.no_grad():
            base = _forward(ad, batch).pred
            permuted = _forward(
                ad,
                full_batch(split).__class__(
                    **{
                        f: (getattr(batch, f)[perm] if getattr(batch, f) is not None else None)
                        for f in batch.__dataclass_fields__
                        if f != "keep"
                    }
                ),
            ).pred
        same = torch.allclose(base[perm], permuted, atol=1e-5)
        assert same is not depends_on_order, name


def test_sample_b_gets_pe_b() -> None:
    ad, split = _model("cider")
    model: CIDerModel = ad.model
    model.eval()
    mct = model.multimodal_transformer
    pe = mct.embed_positions.pe[0]
    x = torch.zeros(30, 5, model.cfg.embed_dim)
    term = mct.positions(30, 5, None).expand_as(x)
    for b in range(5):
        assert torch.equal(term[:, b], pe[b].expand(30, -1))
    fixed = get_adapter("cider_fixed")(make_ctx(split, adapter="cider_fixed")).model
    term = fixed.multimodal_transformer.positions(30, 5, None).expand_as(x)
    assert torch.equal(term[:, 2], pe[:30])
    # A sample evaluated alone at row 0 with pe_index=[b] equals that sample at row b.
    batch = full_batch(split)
    one = full_batch(make_split(8, n=10, audio_len=14, vision_len=11))
    with torch.no_grad():
        whole = _forward(ad, batch).pred
        idx = torch.tensor([5])
        single = one.__class__(
            **{
                f: (getattr(one, f)[idx] if getattr(one, f) is not None else None)
                for f in one.__dataclass_fields__
                if f != "keep"
            }
        )
        alone = _forward(ad, single, pe_index=torch.tensor([5])).pred
        at_zero = _forward(ad, single).pred
    assert torch.allclose(alone[0], whole[5], atol=1e-5)
    assert not torch.allclose(at_zero[0], whole[5], atol=1e-4)


def test_causal_head_mixture() -> None:
    torch.manual_seed(0)
    ad, _ = _model("cider")
    model: CIDerModel = ad.model
    model.eval()
    c, dim = model.cfg.num_classes, model.cfg.proto_dim
    rep = torch.randn(6, 3 * model.cfg.embed_dim)
    protos = torch.randn(c, dim)
    prior = torch.tensor([0.2, 0.3, 0.5])
    with torch.no_grad():
        pred = model.causal_head(rep, protos, prior)
        assert torch.allclose(pred.exp().sum(1), torch.ones(6), atol=1e-6)
        # Hand-computed mixture over strata.
        enc = model.encode_prototypes(protos)
        expected = sum(
            prior[i]
            * torch.softmax(model.classifiers[i](torch.cat((rep, enc[i].expand(6, -1)), 1)), 1)
            for i in range(c)
        )
        assert torch.allclose(pred, expected.log(), atol=1e-6)
        # Uniform prior and identical prototypes: the average of the C heads.
        same = protos[:1].expand(c, -1)
        pred = model.causal_head(rep, same, torch.full((c,), 1 / c))
        z = torch.cat((rep, model.encode_prototypes(same)[0].expand(6, -1)), 1)
        avg = sum(torch.softmax(model.classifiers[i](z), 1) for i in range(c)) / c
        assert torch.allclose(pred.exp(), avg, atol=1e-6)


def test_log_without_epsilon_vs_clamp() -> None:
    for name, finite in (("cider", False), ("cider_fixed", True)):
        ad, _ = _model(name)
        model: CIDerModel = ad.model
        rep = torch.zeros(2, 3 * model.cfg.embed_dim)
        with torch.no_grad():
            for clf in model.classifiers:
                clf.weight.zero_()
                clf.bias.copy_(torch.tensor([0.0, -1e4, 0.0]))
            pred = model.causal_head(rep, torch.zeros(3, model.cfg.proto_dim), torch.ones(3) / 3)
        assert bool(torch.isfinite(pred[:, 1]).all()) == finite
        assert torch.isfinite(pred[:, [0, 2]]).all()
        if finite:
            assert torch.allclose(pred[:, 1], torch.full((2,), torch.log(torch.tensor(1e-12))))
        else:
            assert torch.isneginf(pred[:, 1]).all()  # Q-18 reproduced
