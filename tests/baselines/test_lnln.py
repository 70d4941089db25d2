"""LNLN baseline: state-dict parity with the original, its quirks (GRL on the prediction path,
discriminator input, per-epoch schedule) and adapter behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import baselines.lnln.model as lnln_model
from baselines.lnln.adapter import LNLNAdapter, _inputs, language_missing_rate, lr_factor
from baselines.lnln.model import LNLN, LNLNConfig, LNLNInputs
from mer_bench.adapters import AdapterContext
from mer_bench.batch import KeepMasks, SplitTensors
from mer_bench.conformance import tiny_spec, tiny_split
from mer_bench.corruption import CorruptionKind
from mer_bench.data.types import CLS_ID, SEP_ID, Split
from mer_bench.errors import ConfigError
from mer_bench.protocol import Alignment, Task

# Tiny shapes: every test runs in well under a second.
SMALL = {
    "dim": 16,
    "tokens": 4,
    "heads": 2,
    "dim_head": 8,
    "mlp_dim": 16,
    "embed_depth": 2,
    "hyper_depth": 3,
    "hyper_heads": 2,
    "fusion_depth": 2,
}


def small_model(**overrides: int) -> LNLN:
    torch.manual_seed(0)
    cfg = LNLNConfig(
        audio_dim=5,
        vision_dim=7,
        text_len=10,
        audio_len=12,
        vision_len=14,
        **{**SMALL, **overrides},
    )
    return LNLN(cfg)


def small_inputs(b: int = 3, seed: int = 0) -> LNLNInputs:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (b, 10), generator=g)
    mask = torch.ones(b, 10, dtype=torch.int64)
    mask[:, 7:] = 0
    ids = ids * mask
    ids[:, 0] = CLS_ID
    ids[:, 6] = SEP_ID
    return LNLNInputs(
        ids,
        mask,
        torch.zeros_like(ids),
        torch.randn(b, 12, 5, generator=g),
        torch.randn(b, 14, 7, generator=g),
    )


# --------------------------------------------------------------------------- parity


def _table(model: LNLN) -> list[str]:
    params = dict(model.named_parameters())
    rows = ["name\tshape\tkind"]
    for name, tensor in model.state_dict().items():
        if name.startswith(lnln_model.BERT_PREFIX):
            continue
        shape = "x".join(str(s) for s in tensor.shape)
        rows.append(f"{name}\t{shape}\t{'param' if name in params else 'buffer'}")
    return rows


def _mosei_from_mosi(mosi: list[str]) -> list[str]:
    """The original MOSEI table, derived from the MOSI one: audio 74-d over 500 frames, vision
    35-d, and a 4-layer fusion cross-transformer (layers 2, 3 named like layers 0, 1)."""
    out: list[str] = []
    fusion = "dmml.2.CrossTransformerEncoder.layers."
    layer1 = [r for r in mosi if r.startswith(fusion + "1.")]
    for row in mosi:
        name, shape, kind = row.split("\t")
        shape = {
            "proj_a.0.weight": "128x74",
            "proj_v.0.weight": "128x35",
            "proj_a.1.pos_embedding": "1x508x128",
        }.get(name, shape)
        out.append(f"{name}\t{shape}\t{kind}")
        if row == layer1[-1]:
            for i in (2, 3):
                out += [r.replace(fusion + "1.", f"{fusion}{i}.") for r in layer1]
    return out


@pytest.fixture
def patched_bert768(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 768-wide, 1-layer random BERT: the original's geometry for everything outside BERT
    (the parity listing was made the same way), built in a fraction of bert-base's time."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=768,
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=256,
        max_position_embeddings=64,
    )
    monkeypatch.setattr(lnln_model, "build_text_encoder", lambda _: transformers.BertModel(config))


@pytest.mark.usefixtures("patched_bert768")
def test_mosi_state_dict_matches_the_original(reference_tsv: list[str]) -> None:
    model = LNLN(LNLNConfig())  # the original MOSI configuration
    assert _table(model) == reference_tsv
    non_bert = sum(
        p.numel() for n, p in model.named_parameters() if not n.startswith(lnln_model.BERT_PREFIX)
    )
    assert non_bert == 6_483_012
    assert not list(model.buffers()) or all(
        n.startswith(lnln_model.BERT_PREFIX) for n, _ in model.named_buffers()
    )


@pytest.mark.usefixtures("patched_bert768")
def test_mosei_state_dict_is_the_original_mosei_configuration(reference_tsv: list[str]) -> None:
    cfg = LNLNConfig(audio_dim=74, vision_dim=35, audio_len=500, vision_len=500, fusion_depth=4)
    model = LNLN(cfg)
    table = _table(model)
    assert table == _mosei_from_mosi(reference_tsv)
    assert len(table) - 1 == 420 + 2 * 17
    non_bert = sum(
        p.numel() for n, p in model.named_parameters() if not n.startswith(lnln_model.BERT_PREFIX)
    )
    # + audio/vision input widths, + 125 audio positions, + two fusion layers of 296,320.
    assert non_bert == 6_483_012 + 128 * 69 + 128 * 15 + 125 * 128 + 2 * 296_320


@pytest.fixture(scope="module")
def reference_tsv() -> list[str]:
    from tests.conftest import REFERENCE_DIR

    path = REFERENCE_DIR / "lnln_state_dict_mosi_unaligned.tsv"
    if not path.is_file():
        pytest.skip(f"reference table not found at {path}")
    return path.read_text().splitlines()


def test_initialisation_follows_the_original() -> None:
    model = small_model()
    assert torch.equal(model.h_hyper, torch.ones_like(model.h_hyper))
    assert torch.equal(model.h_p, torch.ones_like(model.h_p))
    extras = [p for n, p in model.named_parameters() if n.endswith("extra_token")]
    assert extras and all(not p.any() for p in extras)
    pos = model.proj_a[1].pos_embedding
    assert 0.7 < float(pos.detach().std()) < 1.3  # randn, std 1


# --------------------------------------------------------------------------- forward


def test_forward_shapes_train_and_eval() -> None:
    model = small_model()
    x, c = small_inputs(4), small_inputs(4, seed=1)
    out = model(x, c)
    assert out["sentiment_preds"].shape == (4, 1)
    assert out["w"].shape == (4, 1)
    # 2B samples × T tokens rows: the mixed feature then the complete-language tokens.
    assert out["effectiveness_discriminator_out"].shape == (2 * 4 * 4, 2)
    assert out["rec_feats"].shape == out["complete_feats"].shape == (4, 3 * 4, 16)
    model.eval()
    with torch.no_grad():
        ev = model(x)
    assert set(ev) == {"sentiment_preds", "w"}
    one = model(small_inputs(1))
    assert one["sentiment_preds"].shape == (1, 1)


def test_prediction_is_per_sample() -> None:
    """No batch coupling: a sample's prediction does not depend on its batch mates."""
    model = small_model().eval()
    x = small_inputs(5)
    with torch.no_grad():
        full = model(x)["sentiment_preds"]
        parts = [
            model(LNLNInputs(*(t[i : i + 1] for t in lnln_model._fields(x))))["sentiment_preds"]
            for i in range(5)
        ]
    torch.testing.assert_close(full, torch.cat(parts), atol=1e-5, rtol=1e-5)


def test_grl_reverses_the_prediction_gradient_into_the_proxy_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The GRL sits on the prediction path: the sentiment loss's gradient into the proxy generator and h_p is negated; the
    completeness check (on the language path) is not affected."""
    x = small_inputs(3)

    def grads() -> dict[str, torch.Tensor]:
        model = small_model()
        model(x)["sentiment_preds"].sum().backward()
        return {
            "h_p": model.h_p.grad.clone(),
            "proxy": model.proxy_dominate_modality_generator.pos_embedding.grad.clone(),
            "check": model.completeness_check[1][0].weight.grad.clone(),
            "head": model.dmml[3].weight.grad.clone(),
        }

    reversed_ = grads()
    monkeypatch.setattr(lnln_model, "grad_reverse", lambda t: t)
    plain = grads()
    for name in ("h_p", "proxy"):
        assert plain[name].abs().sum() > 0, name
        torch.testing.assert_close(reversed_[name], -plain[name])
    for name in ("check", "head"):
        assert plain[name].abs().sum() > 0, name
        torch.testing.assert_close(reversed_[name], plain[name])


def test_grad_reverse_is_identity_forward_and_negates_backward() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    y = lnln_model.grad_reverse(x)
    assert torch.equal(y, x)
    (y * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(x.grad, -torch.arange(4.0).expand(3, 4))


def test_hyper_layer_adds_the_shift_to_the_normalised_state() -> None:
    """The hyper-modality residual: h_hyper ← LayerNorm4(h_hyper) + shift, not h_hyper + shift."""
    torch.manual_seed(0)
    layer = lnln_model.HyperModalityLayer(16, 2)
    lang, audio, vision = (torch.randn(2, 4, 16) for _ in range(3))
    hyper = torch.randn(2, 4, 16) * 5 + 3
    shift = layer.fn(layer.norm1(lang), layer.norm2(audio), layer.norm3(vision))
    torch.testing.assert_close(layer(lang, audio, vision, hyper), layer.norm4(hyper) + shift)


def test_hyper_layers_read_the_language_encoder_hidden_states_in_order() -> None:
    model = small_model().eval()
    h = torch.randn(2, 4, 16)
    hidden = model.dmml[0](h)
    assert len(hidden) == 3
    torch.testing.assert_close(hidden[0], h + model.dmml[0].pos_embedding)


def test_frame_pooling_shortens_the_positional_table_and_keeps_padding_zero() -> None:
    model = small_model(pool_frames_to=4)
    assert model.proj_a[1].pos_embedding.shape[1] == 4 + 4  # ceil(12 / 3) + T
    assert model.proj_v[1].pos_embedding.shape[1] == 4 + 4  # ceil(14 / 4) + T
    x = torch.arange(14.0).view(1, 14, 1)
    pooled = model._pool(x)
    torch.testing.assert_close(pooled.view(-1), torch.tensor([1.5, 5.5, 9.5, 12.5 / 2]))
    assert np.isfinite(model(small_inputs(2))["sentiment_preds"].detach().numpy()).all()
    assert not math.isnan(float(model(small_inputs(2))["w"].detach().sum()))


# --------------------------------------------------------------------------- adapter


def make_adapter(
    task: Task = Task.REGRESSION, preset: str = "synth", **overrides: object
) -> tuple[LNLNAdapter, Split]:
    spec = tiny_spec(task, Alignment.UNALIGNED)
    split = tiny_split(spec, 24, seed=1)
    params = LNLNAdapter.resolve_params(preset, {**SMALL, "pool_frames_to": 0, **overrides})
    torch.manual_seed(0)
    return LNLNAdapter(AdapterContext.create(spec, params)), split


@pytest.mark.parametrize(
    ("epoch", "factor"),
    [
        (1, 0.0),  # epoch 1 trains at lr 0
        (2, 1 / 20),
        (21, 1.0),
        (22, 1.0),
        (112, 0.5),
        (200, 0.5 * (1 + math.cos(math.pi * 178 / 180))),
    ],
)
def test_lr_factor_is_the_original_warmup_then_cosine(epoch: int, factor: float) -> None:
    assert lr_factor(epoch, 20, 180) == pytest.approx(factor, abs=1e-12)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_schedule_steps_once_per_epoch_through_the_hooks() -> None:
    """The adapter's LambdaLR, driven by on_epoch_start/on_epoch_end as the fit loop drives it,
    gives the original's learning rates at epochs 1, 2, 21 and 200 (200 ≈ 3.0e-8)."""
    adapter, _ = make_adapter(preset="paper")
    seen = {}
    for epoch in range(1, 201):
        adapter.on_epoch_start(epoch)
        seen[epoch] = adapter.optimizer.param_groups[0]["lr"]
        adapter.on_epoch_end(epoch)
    assert seen[1] == 0.0
    assert seen[2] == pytest.approx(5e-6)
    assert seen[21] == pytest.approx(1e-4)
    assert seen[200] == pytest.approx(3.0458e-8, rel=1e-3)
    assert isinstance(adapter.optimizer, torch.optim.AdamW)
    assert len(adapter.optimizer.param_groups) == 1  # BERT in the same group
    assert adapter.optimizer.param_groups[0]["weight_decay"] == 1e-4


def test_epoch_one_moves_no_parameter_but_advances_adamw() -> None:
    adapter, split = make_adapter(preset="paper")
    adapter.on_epoch_start(1)
    adapter.train_mode()
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    data = SplitTensors(split, adapter.ctx.task)
    batch = data.batch(torch.arange(8))
    adapter.train_step(batch, torch.Generator())
    assert all(torch.equal(before[k], v) for k, v in adapter.model.state_dict().items())
    state = adapter.optimizer.state[adapter.model.h_hyper]
    assert int(state["step"]) == 1 and state["exp_avg_sq"].abs().sum() > 0
    adapter.on_epoch_end(1)
    adapter.on_epoch_start(2)
    adapter.train_step(batch, torch.Generator())
    assert not torch.equal(before["dmml.3.weight"], adapter.model.state_dict()["dmml.3.weight"])


def test_training_corruption_is_the_original_mixture() -> None:
    adapter, _ = make_adapter(preset="mosi")
    c = adapter.training_corruption()
    assert c is not None and c.kind is CorruptionKind.MIXTURE
    assert (c.p_complete, c.r_max, c.per_epoch) == (0.5, 1.0, True)
    paper, _ = make_adapter(preset="paper")
    assert paper.training_corruption().per_epoch is False  # the original's fixed masks
    clean, _ = make_adapter(preset="mosi", train_missing=False)
    assert clean.training_corruption() is None


def test_presets_mosi_mosei_paper() -> None:
    p = LNLNAdapter.presets
    assert p["mosi"]["fusion_depth"] == 2 and p["mosei"]["fusion_depth"] == 4
    assert p["paper"]["max_epochs"] == p["paper"]["patience"] == 200
    for name in ("mosi", "mosei", "paper"):
        assert (p[name]["alpha"], p[name]["beta"], p[name]["gamma"], p[name]["sigma"]) == (
            0.9,
            0.8,
            0.1,
            1.0,
        )
        assert (p[name]["dim"], p[name]["tokens"], p[name]["batch_size"]) == (128, 8, 64)
    assert set(LNLNAdapter.search_space) <= set(p["mosi"])


def test_language_missing_rate_counts_droppable_tokens_only() -> None:
    spec = tiny_spec(Task.REGRESSION, Alignment.UNALIGNED)
    data = SplitTensors(tiny_split(spec, 4, seed=2), Task.REGRESSION)
    batch = data.batch(torch.arange(4))
    assert torch.equal(language_missing_rate(batch), torch.zeros(4))
    valid = batch.text_mask.bool()
    lengths = batch.text_mask.sum(dim=1)
    keep_text = valid.clone()
    # Drop half of sample 0's droppable tokens and all of sample 1's; samples 2-3 stay complete.
    droppable0 = torch.arange(1, int(lengths[0]) - 1)
    keep_text[0, droppable0[: len(droppable0) // 2]] = False
    keep_text[1, 1 : int(lengths[1]) - 1] = False
    keep = KeepMasks(keep_text, batch.audio_mask.bool(), batch.vision_mask.bool())
    rate = language_missing_rate(batch.with_missing(keep))
    torch.testing.assert_close(
        rate, torch.tensor([(len(droppable0) // 2) / len(droppable0), 1.0, 0.0, 0.0])
    )


def test_loss_terms_use_the_complete_view_and_the_original_weights() -> None:
    adapter, split = make_adapter()
    data = SplitTensors(split, Task.REGRESSION)
    batch = data.batch(torch.arange(6))
    corruption = adapter.training_corruption()
    corrupted = corruption.apply(batch, seed=3, epoch=1)
    assert corrupted.keep is not None and corrupted.complete_view is not corrupted
    adapter.model.train()
    terms = adapter.losses(corrupted)
    assert set(terms) == {"cc", "adv", "rec", "sp"}
    assert all(torch.isfinite(t) for t in terms.values())
    # Zero weights switch the auxiliary terms off: only the sentiment MSE is left.
    off, _ = make_adapter(alpha=0.0, beta=0.0, gamma=0.0)
    off.model.train()
    t = {k: v.detach() for k, v in off.losses(corrupted).items()}
    assert float(t["cc"]) == float(t["adv"]) == float(t["rec"]) == 0.0
    off.model.eval()  # no BERT dropout: the two passes below are comparable
    with torch.no_grad():
        out = off.model(_inputs(corrupted), _inputs(corrupted.complete_view))
        c_l, c_a, c_v = off.model.embed(_inputs(batch))
        _, h_a, _ = off.model.embed(_inputs(corrupted))
    # The discriminator sees 2·B·T token rows; the reconstruction targets are the complete view's
    # embeddings, the reconstructors read the corrupted view's.
    assert out["effectiveness_discriminator_out"].shape == (2 * 6 * 4, 2)
    torch.testing.assert_close(out["complete_feats"], torch.cat((c_a, c_v, c_l), dim=1))
    assert not torch.allclose(h_a, c_a)
    torch.testing.assert_close(out["rec_feats"][:, :4], off.model.reconstructor[0](h_a))


def test_classification_head_and_scores() -> None:
    adapter, split = make_adapter(Task.SEVEN)
    assert adapter.model.dmml[3].out_features == 7
    data = SplitTensors(split, Task.SEVEN)
    adapter.model.eval()
    with torch.no_grad():
        out = {k: v.numpy() for k, v in adapter.predict(data.batch(torch.arange(5))).items()}
    scores = adapter.scores(out, {})
    assert scores.shape == (5, 7)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_unknown_or_bad_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="hyper_heads"):
        make_adapter(dim=18, hyper_heads=4)
    with pytest.raises(ConfigError, match="cosine_epochs"):
        make_adapter(cosine_epochs=0)


def test_attention_is_scaled_softmax_without_mask() -> None:
    torch.manual_seed(0)
    attn = lnln_model.Attention(16, heads=2, dim_head=8)
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    heads = [
        t.view(2, -1, 2, 8).transpose(1, 2) for t in (attn.to_q(q), attn.to_k(kv), attn.to_v(kv))
    ]
    probs = torch.softmax(heads[0] @ heads[1].transpose(-1, -2) / math.sqrt(8), dim=-1)
    merged = (probs @ heads[2]).transpose(1, 2).reshape(2, 3, 16)
    torch.testing.assert_close(attn(q, kv, kv), attn.to_out(merged))


@pytest.mark.parametrize("preset", ["mosi", "paper"])
def test_fit_hands_train_step_the_harness_corrupted_view(preset: str) -> None:
    """Through the harness's fit loop: train_step gets corrupted batches with the complete view
    attached; the masks change between epochs unless the preset fixes them."""
    from mer_bench.data.types import DatasetBundle
    from mer_bench.protocol import Dataset, DataSetting, Distribution
    from mer_bench.train import FitConfig, fit

    adapter, split = make_adapter(preset=preset, warmup_epochs=0, cosine_epochs=2)
    spec = adapter.ctx.spec
    valid = tiny_split(spec, 8, seed=5, name="valid")
    data = DataSetting(Dataset.SYNTH, Distribution.IID, Alignment.UNALIGNED, Task.REGRESSION)
    bundle = DatasetBundle(data, split, valid, valid, spec)
    seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    original = adapter.train_step

    def spy(batch, generator):  # type: ignore[no-untyped-def]
        assert batch.keep is not None and batch.complete_view is not batch
        assert torch.equal(batch.complete_view.text_mask, batch.text_mask)
        seen.setdefault(adapter.epoch_seen, []).append((batch.index, batch.keep.audio))
        return original(batch, generator)

    adapter.train_step = spy  # type: ignore[method-assign]
    hook = adapter.on_epoch_start

    def start(epoch: int) -> None:
        adapter.epoch_seen = epoch  # type: ignore[attr-defined]
        hook(epoch)

    adapter.on_epoch_start = start  # type: ignore[method-assign]
    result = fit(adapter, bundle, 1111, FitConfig(max_epochs=2, patience=2, batch_size=8))
    assert len(result.history) == 2 and all(math.isfinite(r.train_loss) for r in result.history)

    def by_sample(epoch: int) -> torch.Tensor:
        pairs = seen[epoch]
        index = torch.cat([i for i, _ in pairs])
        keep = torch.cat([k for _, k in pairs])
        return keep[torch.argsort(index)]

    first, second = by_sample(1), by_sample(2)
    assert not bool(first.all())  # some frames were dropped
    assert torch.equal(first, second) is (preset == "paper")
