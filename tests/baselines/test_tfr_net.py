"""TFR-Net baseline: reference parity (state dict, counts), the batch-coupled reconstruction of
the original against the fixed form, the fusion block and the reconstruction loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from baselines.tfr_net.model import (
    BertTextEncoder,
    CGate,
    FinalAttention,
    TFRNet,
    TFRNetConfig,
    cmd,
    reconstruction_loss,
)
from mer_bench.text_encoder import build_text_encoder
from tests.baselines.helpers import listing, non_bert_params, read_tsv

MOSI_NON_BERT = 14_850_620


def bert(hidden: int = 32) -> BertTextEncoder:
    """A one-layer random BERT of the given width (bert-base's width for parity tables)."""
    heads = 12 if hidden % 12 == 0 else 2
    encoder = build_text_encoder(
        None, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=heads
    )
    return BertTextEncoder(encoder)


def real_config(dataset: str, **overrides) -> TFRNetConfig:
    dims = {"mosi": (5, 20, 375, 500), "mosei": (74, 35, 500, 500)}[dataset]
    return TFRNetConfig(
        text_dim=768,
        audio_dim=dims[0],
        vision_dim=dims[1],
        text_len=50,
        audio_len=dims[2],
        vision_len=dims[3],
        **overrides,
    )


# ----------------------------------------------------------------------------- parity


@pytest.fixture(scope="module")
def mosi_model() -> TFRNet:
    torch.manual_seed(0)
    return TFRNet(real_config("mosi"), bert(768))


def test_mosi_state_dict_matches_reference_table(mosi_model: TFRNet) -> None:
    reference = read_tsv("tfrnet_state_dict_mosi_unaligned.tsv")
    assert listing(mosi_model) == reference
    assert len(reference) == 579
    assert non_bert_params(mosi_model) == MOSI_NON_BERT
    buffers = [
        (n, t)
        for n, t in mosi_model.state_dict().items()
        if n not in dict(mosi_model.named_parameters()) and not n.startswith("text_model.")
    ]
    assert len(buffers) == 24 and sum(t.numel() for _, t in buffers) == 230


def test_mosi_breakdown_matches_closed_form(mosi_model: TFRNet) -> None:
    def count(prefix: str) -> int:
        return sum(p.numel() for n, p in mosi_model.named_parameters() if n.startswith(prefix))

    align = "align_subnet.Model."
    assert [count(f"{align}proj_{m}.") for m in "lav"] == [23_040, 750, 1_800]
    assert count(f"{align}trans_l_with_a.") == count(f"{align}trans_v_mem.") == 33_630
    for m, w in zip("lav", (50, 375, 500), strict=True):
        assert count(f"{align}trans_{m}_final.") == 36 * w * w + 41 * w
    assert [count(f"generator_{m}.") for m in "tav"] == [69_888, 455, 1_820]
    fusion = "fusion_subnet.Model."
    assert count(f"{fusion}text_encoder.") == 81_253
    assert count(f"{fusion}audio_encoder.") == 31_061
    assert count(f"{fusion}vision_encoder.") == 133_681
    assert count(f"{fusion}classifier.") == 13_777


def test_mosei_state_dict_is_mosi_with_mosei_widths() -> None:
    """MMSA's MOSEI config: same names and order; MOSEI feature widths and 500-frame audio."""
    model = TFRNet(real_config("mosei"), bert(768))
    changed = {
        "align_subnet.Model.proj_a.weight": "30x74x5",
        "align_subnet.Model.proj_v.weight": "30x35x3",
        "generator_a.Model.linear.weight": "74x90",
        "generator_a.Model.linear.bias": "74",
        "generator_v.Model.linear.weight": "35x90",
        "generator_v.Model.linear.bias": "35",
    }

    def mosei_shape(name: str, shape: str) -> str:
        if name in changed:
            return changed[name]
        if name.startswith("align_subnet.Model.trans_a_final.") and shape != "1":
            # Every width is a multiple of w: w, 3w (in_proj), 4w (fc1/fc2).
            return "x".join(str(int(s) // 375 * 500) for s in shape.split("x"))
        return shape

    expected = [
        (n, mosei_shape(n, s), k) for n, s, k in read_tsv("tfrnet_state_dict_mosi_unaligned.tsv")
    ]
    assert listing(model) == expected
    # proj_a/proj_v, trans_a_final (w 375 → 500) and generators a/v change.
    delta = (
        (30 * 74 * 5 - 750)
        + (30 * 35 * 3 - 1_800)
        + (36 * 500**2 + 41 * 500)
        - (36 * 375**2 + 41 * 375)
        + (74 * 91 - 455)
        + (35 * 91 - 1_820)
    )
    assert non_bert_params(model) == MOSI_NON_BERT + delta == 18_812_589


def test_class_heads_only_change_the_last_layer() -> None:
    model = TFRNet(real_config("mosi", out_dim=3), bert(768))
    rows = dict((n, s) for n, s, _ in listing(model))
    assert rows["fusion_subnet.Model.classifier.linear_trans_final.weight"] == "3x128"
    assert non_bert_params(model) == MOSI_NON_BERT + 2 * 129


def test_head_count_must_divide_every_sequence_length() -> None:
    with pytest.raises(ValueError, match="num_temporal_head"):
        real_config("mosi", num_temporal_head=7)
    with pytest.raises(ValueError, match="odd"):
        real_config("mosi", kernel_a=4)


# ----------------------------------------------------------------------------- behaviour


def small_config(final: FinalAttention, **overrides) -> TFRNetConfig:
    base = dict(
        text_dim=32,
        audio_dim=5,
        vision_dim=7,
        text_len=10,
        audio_len=15,
        vision_len=20,
        d_model=12,
        num_heads=2,
        nlevels=1,
        num_temporal_head=5,
        fusion_t_hid=6,
        fusion_a_hid=4,
        fusion_v_hid=8,
        fusion_gru_layers=2,
        cls_hidden_dim=16,
        final_attention=final,
    )
    return TFRNetConfig(**{**base, **overrides})


def small_inputs(b: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    text_len = torch.randint(4, 11, (b,), generator=g)
    mask = (torch.arange(10)[None] < text_len[:, None]).long()
    ids = torch.randint(1000, 2000, (b, 10), generator=g) * mask
    ids[:, 0] = 101
    ids[torch.arange(b), text_len - 1] = 102
    a_len = torch.randint(5, 16, (b,), generator=g)
    v_len = torch.randint(5, 21, (b,), generator=g)
    a_mask = (torch.arange(15)[None] < a_len[:, None]).long()
    v_mask = (torch.arange(20)[None] < v_len[:, None]).long()
    return {
        "text_bert": torch.stack([ids, mask, torch.zeros_like(ids)], dim=1),
        "audio": torch.randn(b, 15, 5, generator=g) * a_mask[..., None],
        "vision": torch.randn(b, 20, 7, generator=g) * v_mask[..., None],
        "audio_mask": a_mask,
        "vision_mask": v_mask,
    }


def pair_of_models() -> tuple[TFRNet, TFRNet]:
    """The original and the fixed form with the very same weights, in eval mode."""
    torch.manual_seed(3)
    original = TFRNet(small_config(FinalAttention.BATCH), bert())
    fixed = TFRNet(small_config(FinalAttention.SAMPLE), bert())
    fixed.load_state_dict(original.state_dict())
    return original.eval(), fixed.eval()


def run(model: TFRNet, inputs: dict[str, torch.Tensor]):
    with torch.no_grad():
        out = model(**inputs)
        return out.prediction, model.reconstruct(out.hidden)


def perturb_row(inputs: dict[str, torch.Tensor], row: int) -> dict[str, torch.Tensor]:
    changed = dict(inputs)
    for key in ("audio", "vision"):
        x = inputs[key].clone()
        x[row] = x[row] + 1.0
        changed[key] = x
    return changed


def changed_rows(a: torch.Tensor, b: torch.Tensor) -> list[int]:
    diff = (a - b).abs().flatten(1).amax(dim=1)
    return [i for i, d in enumerate(diff.tolist()) if d > 1e-6]


def test_original_reconstruction_depends_on_batch_composition() -> None:
    original, _ = pair_of_models()
    inputs = small_inputs(8)
    pred, rec = run(original, inputs)
    pred2, rec2 = run(original, perturb_row(inputs, 4))
    # Causal attention over the batch axis: row 4 reaches rows 4..7 of every reconstruction.
    for m in "lav":
        assert changed_rows(rec[m], rec2[m]) == [4, 5, 6, 7]
    assert changed_rows(pred, pred2) == [4]
    # A sample reconstructed alone differs from the same sample after others in its batch.
    alone = run(original, {k: v[5:6] for k, v in inputs.items()})[1]
    assert not torch.allclose(alone["a"][0], rec["a"][5], atol=1e-4)


def test_fixed_reconstruction_is_per_sample() -> None:
    _, fixed = pair_of_models()
    inputs = small_inputs(8)
    pred, rec = run(fixed, inputs)
    pred2, rec2 = run(fixed, perturb_row(inputs, 4))
    for m in "lav":
        assert changed_rows(rec[m], rec2[m]) == [4]
    assert changed_rows(pred, pred2) == [4]
    alone = run(fixed, {k: v[5:6] for k, v in inputs.items()})[1]
    for m in "lav":
        torch.testing.assert_close(alone[m][0], rec[m][5], atol=1e-5, rtol=1e-5)


def test_both_forms_predict_the_same_and_reconstruct_differently() -> None:
    original, fixed = pair_of_models()
    inputs = small_inputs(6)
    (p1, r1), (p2, r2) = run(original, inputs), run(fixed, inputs)
    torch.testing.assert_close(p1, p2)
    assert not torch.allclose(r1["v"], r2["v"], atol=1e-4)
    assert r1["l"].shape == (6, 10, 32) and r1["a"].shape == (6, 15, 5)
    assert r1["v"].shape == (6, 20, 7)


def test_c_gate_runs_on_true_lengths_and_pools_over_padding() -> None:
    torch.manual_seed(0)
    block = CGate(in_dim=6, hidden=4, layers=2, dropout=0.0).eval()
    x = torch.randn(3, 9, 6)
    mask = (torch.arange(9)[None] < torch.tensor([[9], [5], [2]])).long()
    with torch.no_grad():
        rnn = block.gru(x, torch.tensor([9, 5, 2]))
        pooled = block(x, mask)
        # Padded steps of the GRU output are exactly zero; the valid ones ignore the padding.
        assert torch.count_nonzero(rnn[1, 5:]) == 0 and torch.count_nonzero(rnn[2, 2:]) == 0
        trimmed = block.gru(x[1:2, :5], torch.tensor([5]))
        torch.testing.assert_close(trimmed[0], rnn[1, :5])
        # The max-pool sees padded positions too (where gx = 0 but the input is not).
        gate = torch.sigmoid(block.cnn(rnn.transpose(1, 2))).transpose(1, 2)
        proj = torch.tanh(block.fc(torch.cat([x, torch.tanh(rnn) * gate], dim=-1)))
        torch.testing.assert_close(pooled, proj.max(dim=1).values)
        assert not torch.allclose(pooled[2], proj[2, :2].max(dim=0).values)


def test_reconstruction_loss_is_a_mean_over_missing_elements() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 4, generator=g)
    missing = torch.zeros(2, 6)
    assert reconstruction_loss(pred, target, missing) == 0.0
    # With CMD on and nothing missing, the three sqrt(0 + 1e-12) terms over the 1e-4 count
    # leave a constant 5 · 3e-6 / 1e-4 = 0.15 (no gradient), as in MMSA's configuration.
    assert float(reconstruction_loss(pred, target, missing, 5.0)) == pytest.approx(0.15, rel=1e-4)
    missing[0, 1] = missing[1, 3] = missing[1, 4] = 1
    rows = missing.bool()
    expected = F.smooth_l1_loss(pred[rows], target[rows], reduction="sum") / (3 * 4 + 1e-4)
    torch.testing.assert_close(reconstruction_loss(pred, target, missing), expected)
    m = missing.unsqueeze(-1)
    with_cmd = expected + 5.0 * cmd((pred * m).reshape(-1, 4), (target * m).reshape(-1, 4)) / (
        12 + 1e-4
    )
    torch.testing.assert_close(reconstruction_loss(pred, target, missing, 5.0), with_cmd)


def test_cmd_is_zero_for_identical_rows_and_grows_with_moments() -> None:
    x = torch.randn(50, 3)
    assert cmd(x, x) == pytest.approx(3 * 1e-6, abs=1e-9)
    shifted, scaled = cmd(x, x + 1.0), cmd(x, 2.0 * (x - x.mean(0)) + x.mean(0))
    assert shifted == pytest.approx(3**0.5 + 2e-6, rel=1e-4)
    assert scaled > 1.0


# ----------------------------------------------------------------------------- adapters


def make_adapter(name: str = "tfr_net", preset: str = "synth", task=None, **overrides):
    from mer_bench.adapters import AdapterContext, get_adapter
    from mer_bench.conformance import tiny_spec
    from mer_bench.protocol import Alignment, Task

    task = task or Task.REGRESSION
    cls = get_adapter(name)
    spec = tiny_spec(task, Alignment.UNALIGNED)
    torch.manual_seed(0)
    adapter = cls(AdapterContext.create(spec, cls.resolve_params(preset, overrides)))
    adapter.train_mode()
    return adapter


def tiny_batches(adapter, n: int, size: int = 6, rate: float = 0.0):
    from mer_bench.batch import SplitTensors
    from mer_bench.conformance import tiny_split
    from mer_bench.corruption import CorruptionKind, TrainCorruption

    data = SplitTensors(tiny_split(adapter.ctx.spec, n * size, seed=2), adapter.ctx.task)
    corruption = TrainCorruption(CorruptionKind.RATE, rate=rate)
    return [
        corruption.apply(data.batch(torch.arange(i * size, (i + 1) * size)), seed=5, epoch=1)
        for i in range(n)
    ]


def count_steps(adapter, batches, epoch: int = 1) -> list[int]:
    """1-based batch numbers after which the optimiser stepped (epoch-end steps as n+1)."""
    stepped: list[int] = []
    current = [0]
    original = adapter.optimizer.step

    def step(*args, **kwargs):
        stepped.append(current[0])
        return original(*args, **kwargs)

    adapter.optimizer.step = step
    adapter.on_epoch_start(epoch)
    gen = torch.Generator().manual_seed(0)
    for i, batch in enumerate(batches, start=1):
        current[0] = i
        adapter.train_step(batch, gen)
    current[0] = len(batches) + 1
    adapter.on_epoch_end(epoch)
    return stepped


def test_original_steps_five_times_per_four_batches() -> None:
    adapter = make_adapter("tfr_net", update_epochs=4)
    batches = tiny_batches(adapter, 5)
    assert count_steps(adapter, batches) == [1, 2, 3, 4, 4, 5]
    # The counter restarts every epoch: the trailing batch 5 does not join the next group.
    assert count_steps(adapter, batches, epoch=2) == [1, 2, 3, 4, 4, 5]


def test_fixed_steps_once_per_accumulated_group() -> None:
    adapter = make_adapter("tfr_net_fixed", update_epochs=4)
    assert count_steps(adapter, tiny_batches(adapter, 5)) == [4, 6]


def test_gradients_are_value_clipped_running_sums() -> None:
    adapter = make_adapter("tfr_net_fixed", update_epochs=4, grad_clip=0.01)
    gen = torch.Generator().manual_seed(0)
    adapter.on_epoch_start(2)
    for batch in tiny_batches(adapter, 2, rate=0.5):
        adapter.train_step(batch, gen)
    grads = [p.grad for p in adapter.model.parameters() if p.grad is not None]
    assert max(float(g.abs().max()) for g in grads) == pytest.approx(0.01)


def test_reconstruction_joins_the_loss_from_epoch_two() -> None:
    adapter = make_adapter("tfr_net_fixed", update_epochs=1)
    model = adapter.model
    gen = torch.Generator().manual_seed(0)
    (batch,) = tiny_batches(adapter, 1, rate=0.5)
    adapter.on_epoch_start(1)
    adapter.train_step(batch, gen)
    # Epoch 1: no gradient reaches the generators or the final transformers (None, not 0).
    assert model.generator_a.Model.linear.weight.grad is None
    assert model.alignment.trans_v_final.layer_norm.weight.grad is None
    adapter.on_epoch_start(2)
    adapter.train_step(batch, gen)
    assert model.generator_a.Model.linear.weight.grad.abs().sum() > 0
    assert model.alignment.trans_v_final.layer_norm.weight.grad.abs().sum() > 0


def test_reconstruction_targets_are_the_complete_view() -> None:
    adapter = make_adapter("tfr_net", weight_sim_loss=0.0)
    adapter.model.eval()
    (batch,) = tiny_batches(adapter, 1, rate=0.5)
    complete = batch.complete_view
    assert batch.keep is not None and not torch.equal(batch.audio, complete.audio)
    with torch.no_grad():
        out = adapter.model(
            batch.text_bert, batch.audio, batch.vision, batch.audio_mask, batch.vision_mask
        )
        terms = adapter.reconstruction_terms(adapter.model, batch, complete, out.hidden)
        generated = adapter.model.reconstruct(out.hidden)
    missing = batch.audio_mask - batch.keep.audio.long()
    assert missing.sum() > 0
    expected = reconstruction_loss(generated["a"], complete.audio, missing)
    torch.testing.assert_close(terms["a"], expected)
    # At rate 0 nothing is missing and every term is exactly zero.
    (clean,) = tiny_batches(adapter, 1, rate=0.0)
    with torch.no_grad():
        out = adapter.model(
            clean.text_bert, clean.audio, clean.vision, clean.audio_mask, clean.vision_mask
        )
        terms = adapter.reconstruction_terms(adapter.model, clean, clean.complete_view, out.hidden)
    assert all(float(t) == 0.0 for t in terms.values())


def test_optimizer_groups_follow_the_original() -> None:
    adapter = make_adapter("tfr_net", preset="mosi", num_temporal_head=1)
    decay, no_decay, other = adapter.optimizer.param_groups
    assert decay["lr"] == no_decay["lr"] == 2e-6 and other["lr"] == 1e-3
    assert (decay["weight_decay"], no_decay["weight_decay"], other["weight_decay"]) == (
        1e-4,
        0.0,
        1e-3,
    )
    names = {id(p): n for n, p in adapter.model.named_parameters()}
    assert all("text_model" in names[id(p)] for p in decay["params"] + no_decay["params"])
    assert all(("bias" in names[id(p)]) or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert not any("text_model" in names[id(p)] for p in other["params"])


def test_training_corruption_per_preset() -> None:
    from mer_bench.corruption import CorruptionKind

    mosi = make_adapter("tfr_net", preset="mosi", num_temporal_head=1).training_corruption()
    assert (mosi.kind, mosi.rate, mosi.per_epoch, mosi.fixed_seed) == (
        CorruptionKind.RATE,
        0.2,
        True,
        None,
    )
    paper = make_adapter("tfr_net", preset="paper", num_temporal_head=1).training_corruption()
    assert (paper.rate, paper.per_epoch, paper.fixed_seed) == (0.2, False, 1111)


def test_synth_preset_subsamples_long_streams() -> None:
    from baselines.tfr_net.adapter import TFRNetAdapter
    from mer_bench.adapters import AdapterContext
    from mer_bench.data.types import DataSpec
    from mer_bench.protocol import Task

    spec = DataSpec(50, 375, 500, 5, 20, None, False, Task.BINARY)
    adapter = TFRNetAdapter(AdapterContext.create(spec, TFRNetAdapter.resolve_params("synth")))
    config = adapter.model.config
    assert (adapter.frame_stride("a"), adapter.frame_stride("v")) == (15, 20)
    assert (config.text_len, config.audio_len, config.vision_len) == (50, 25, 25)
