"""Adapter surface: predict/scores/knobs, counterfactual pass, presets, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cider.adapter import TAU_GRID, CIDerAdapter, CIDerFixedAdapter
from cider.bias_words import counterfactual_ids
from mer_bench.adapters import get_adapter
from mer_bench.batch import KeepMasks
from mer_bench.errors import AdapterError
from mer_bench.protocol import Distribution, Task

from .helpers import full_batch, make_ctx, make_split


def _ready(name: str = "cider", aligned: bool = False):
    split = (
        make_split(10, n=10, audio_len=10, vision_len=10, aligned=True)
        if aligned
        else make_split(10, n=10, audio_len=14, vision_len=11)
    )
    ad = get_adapter(name)(make_ctx(split, aligned=aligned, adapter=name))
    ad.setup(split)
    ad.model.eval()
    return ad, split


def _missing_batch(split):
    batch = full_batch(split)
    gen = torch.Generator().manual_seed(0)
    keep = KeepMasks(
        (torch.rand(batch.text_mask.shape, generator=gen) > 0.3) & batch.text_mask.bool(),
        (torch.rand(batch.audio_mask.shape, generator=gen) > 0.3) & batch.audio_mask.bool(),
        (torch.rand(batch.vision_mask.shape, generator=gen) > 0.3) & batch.vision_mask.bool(),
    )
    keep.text[:, 0] = True
    return batch.with_missing(keep)


def test_registry_and_knobs() -> None:
    assert get_adapter("cider") is CIDerAdapter
    assert get_adapter("cider_fixed") is CIDerFixedAdapter
    assert len(TAU_GRID) == 31 and TAU_GRID[3] == 0.3 and TAU_GRID[-1] == 3.0
    assert TAU_GRID[0] == 0.0 and all(g == round(g, 1) for g in TAU_GRID)
    np.testing.assert_allclose(TAU_GRID, np.arange(0, 3.1, 0.1), rtol=0, atol=1e-12)
    assert CIDerAdapter.knob_grid["tau"] == TAU_GRID
    assert CIDerAdapter.default_knobs == {"tau": 0.0}
    for preset in CIDerAdapter.presets.values():
        assert {"batch_size", "max_epochs", "patience", "lr"} <= set(preset)
    default = CIDerAdapter.presets["default"]
    assert (default["batch_size"], default["lr_bert"], default["max_epochs"]) == (128, 5e-5, 200)
    assert default["out_dropout"] == 0.1 * 3 and default["recon_weight"] == 0.1 * 6
    assert set(CIDerAdapter.search_space) == {
        "multimodal_layers",
        "num_heads",
        "attn_dropout",
        "out_dropout",
        "embed_dropout",
        "joint_rep_weight",
        "attn_weight",
        "recon_weight",
    }


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("name", ["cider", "cider_fixed"])
def test_predict_two_passes_and_scores(name: str, aligned: bool) -> None:
    """predict runs both views in one batch and the audio/vision paths once; the result is
    that of two separate passes with every input given in full."""
    ad, split = _ready(name, aligned)
    assert ad.model.cfg.aligned is aligned
    batch = _missing_batch(split)
    with torch.no_grad():
        out = ad.predict(batch)
        assert set(out) == {"logp", "cf_logp"}
        assert out["logp"].shape == out["cf_logp"].shape == (10, 3)
        assert torch.allclose(out["logp"].exp().sum(1), torch.ones(10), atol=1e-5)
        # The same as two separate B-sample passes (the Q-5 rows are those of each pass).
        plain = ad._run(batch, ad._eval_protos).pred
        cf_ids = counterfactual_ids(batch.text_ids, ad._cf_table)
        cf = ad._run(batch, ad._eval_protos, text_ids=cf_ids).pred
    assert torch.allclose(out["logp"], plain, atol=1e-5)
    assert torch.allclose(out["cf_logp"], cf, atol=1e-5)
    # Counterfactual text comes from the missing-view ids: [UNK] of dropped tokens is kept.
    dropped = batch.text_mask.bool() & ~batch.keep.text
    assert dropped.any() and (cf_ids[dropped] == 100).all()
    non_bias = ~ad._cf_table[batch.text_ids]
    assert (cf_ids[non_bias] == 103).all()
    outputs = {k: v.numpy() for k, v in out.items()}
    s = ad.scores(outputs, {"tau": 0.7})
    assert np.allclose(s, outputs["logp"] - 0.7 * outputs["cf_logp"])
    assert np.array_equal(ad.scores(outputs, {"tau": 0.0}), outputs["logp"])


def test_requires_setup_and_rejects_regression() -> None:
    split = make_split(6, n=8, audio_len=10, vision_len=9)
    ad = get_adapter("cider")(make_ctx(split))
    with pytest.raises(AdapterError, match="setup"):
        ad.predict(full_batch(split))
    with pytest.raises(AdapterError):
        get_adapter("cider")(make_ctx(split, task=Task.REGRESSION))


def test_cross_distribution_builds_layernorm_encoders() -> None:
    split = make_split(6, n=8, aligned=True)
    ad = get_adapter("cider")(make_ctx(split, aligned=True, distribution=Distribution.CROSS))
    keys = ad.model.state_dict()
    assert "cls_encoders_a.3.weight" in keys and "cls_encoders_a.2.weight" not in keys
    assert "cls_encoders_l.2.weight" in keys
