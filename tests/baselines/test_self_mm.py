"""Self-MM baseline: reference parity (docs/baselines.md), ULGM algebra and adapter behaviour."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.self_mm.adapter import SelfMMAdapter
from baselines.self_mm.model import AuViSubNet
from baselines.self_mm.ulgm import EPS, ULGM
from mer_bench.adapters import AdapterContext, get_adapter
from mer_bench.batch import Batch, KeepMasks, SplitTensors
from mer_bench.data.types import CLS_ID, SEP_ID, DataSpec, Split
from mer_bench.errors import AdapterError, ConfigError
from mer_bench.protocol import Task
from tests.baselines.helpers import five_group_settings

# the reference table selfmm_state_dict_mmsa_mosi_unaligned.tsv (MMSA SELF_MM, MOSI hp, audio 5 / vision 20,
# everything under text_model. excluded), kept inline so the test needs no shared folder.
REFERENCE_TSV = """\
audio_model.rnn.weight_ih_l0	64x5	param
audio_model.rnn.weight_hh_l0	64x16	param
audio_model.rnn.bias_ih_l0	64	param
audio_model.rnn.bias_hh_l0	64	param
audio_model.linear_1.weight	16x16	param
audio_model.linear_1.bias	16	param
video_model.rnn.weight_ih_l0	128x20	param
video_model.rnn.weight_hh_l0	128x32	param
video_model.rnn.bias_ih_l0	128	param
video_model.rnn.bias_hh_l0	128	param
video_model.linear_1.weight	32x32	param
video_model.linear_1.bias	32	param
post_fusion_layer_1.weight	128x816	param
post_fusion_layer_1.bias	128	param
post_fusion_layer_2.weight	128x128	param
post_fusion_layer_2.bias	128	param
post_fusion_layer_3.weight	1x128	param
post_fusion_layer_3.bias	1	param
post_text_layer_1.weight	32x768	param
post_text_layer_1.bias	32	param
post_text_layer_2.weight	32x32	param
post_text_layer_2.bias	32	param
post_text_layer_3.weight	1x32	param
post_text_layer_3.bias	1	param
post_audio_layer_1.weight	16x16	param
post_audio_layer_1.bias	16	param
post_audio_layer_2.weight	16x16	param
post_audio_layer_2.bias	16	param
post_audio_layer_3.weight	1x16	param
post_audio_layer_3.bias	1	param
post_video_layer_1.weight	32x32	param
post_video_layer_1.bias	32	param
post_video_layer_2.weight	32x32	param
post_video_layer_2.bias	32	param
post_video_layer_3.weight	1x32	param
post_video_layer_3.bias	1	param
"""

HARNESS_KEYS = ("batch_size", "max_epochs", "patience", "lr")

# Small shapes keep every test in the sub-second range.
N, TEXT_LEN, AUDIO_LEN, AUDIO_DIM, VISION_LEN, VISION_DIM = 24, 12, 16, 5, 20, 6


# --------------------------------------------------------------------------- fixtures


def make_split(
    n: int = N,
    *,
    aligned: bool = False,
    seed: int = 0,
    audio_len: int = AUDIO_LEN,
    audio_dim: int = AUDIO_DIM,
    vision_len: int = VISION_LEN,
    vision_dim: int = VISION_DIM,
    text_len: int = TEXT_LEN,
) -> Split:
    """Scores in [-3, 3] carried by the text tokens, the audio and the vision features."""
    rng = np.random.default_rng(seed)
    score = np.round(rng.uniform(-3, 3, n) * 3) / 3
    score[::7] = 0.0
    tl = rng.integers(4, text_len + 1, n)
    mask = (np.arange(text_len)[None] < tl[:, None]).astype(np.int64)
    filler = rng.integers(2000, 2100, (n, text_len))
    sentiment = np.where(
        score[:, None] > 0,
        rng.integers(3000, 3010, (n, text_len)),
        rng.integers(3010, 3020, (n, text_len)),
    )
    ids = np.where(rng.random((n, text_len)) < 0.4, sentiment, filler) * mask
    ids[:, 0] = CLS_ID
    ids[np.arange(n), tl - 1] = SEP_ID
    if aligned:
        audio_len = vision_len = text_len
        a_len = v_len = tl.copy()
    else:
        a_len = rng.integers(1, audio_len + 1, n)
        v_len = rng.integers(1, vision_len + 1, n)
    audio = rng.normal(size=(n, audio_len, audio_dim)).astype(np.float32)
    audio[..., 0] += 0.8 * score[:, None]
    audio *= (np.arange(audio_len)[None] < a_len[:, None])[..., None]
    vision = rng.normal(size=(n, vision_len, vision_dim)).astype(np.float32)
    vision[..., 1] -= 0.8 * score[:, None]
    vision *= (np.arange(vision_len)[None] < v_len[:, None])[..., None]
    return Split(
        name="train",
        sample_ids=np.array([f"v{i}$_$0" for i in range(n)]),
        text_bert=np.stack([ids, mask, np.zeros_like(ids)], axis=1),
        audio=audio,
        vision=vision,
        audio_lengths=a_len.astype(np.int64),
        vision_lengths=v_len.astype(np.int64),
        class_labels=(np.sign(score) + 1).astype(np.int64),
        regression_labels=score.astype(np.float32),
    )


def make_spec(task: Task, split: Split, aligned: bool = False) -> DataSpec:
    return DataSpec(
        text_len=split.text_bert.shape[2],
        audio_len=split.audio.shape[1],
        vision_len=split.vision.shape[1],
        audio_dim=split.audio.shape[2],
        vision_dim=split.vision.shape[2],
        text_feat_dim=None,
        aligned=aligned,
        task=task,
    )


def make_adapter(
    task: Task = Task.REGRESSION,
    *,
    split: Split | None = None,
    aligned: bool = False,
    preset: str = "synth",
    text_encoder: str | None = None,
    seed: int = 0,
    **overrides: object,
) -> tuple[SelfMMAdapter, Split]:
    split = split if split is not None else make_split(aligned=aligned)
    params = SelfMMAdapter.resolve_params(preset, overrides)
    torch.manual_seed(seed)
    ctx = AdapterContext.create(make_spec(task, split, aligned), params, text_encoder=text_encoder)
    return SelfMMAdapter(ctx), split


def run_epochs(
    adapter: SelfMMAdapter, split: Split, epochs: int, batch_size: int = 8
) -> list[dict[str, float]]:
    """A minimal local loop (the real one is the harness's): per-epoch summed head losses."""
    tensors = SplitTensors(split, adapter.ctx.task)
    generator = torch.Generator().manual_seed(0)
    adapter.setup(split)
    adapter.train_mode()
    history = []
    for epoch in range(1, epochs + 1):
        adapter.model.train()
        adapter.on_epoch_start(epoch)
        sums = dict.fromkeys("MTAV", 0.0)
        for batch in tensors.batches(batch_size, generator, shuffle=True):
            adapter.train_step(batch, generator)
            for key, value in adapter.last_losses.items():
                sums[key] += float(value)
        adapter.on_epoch_end(epoch)
        history.append(sums)
    return history


def predict(adapter: SelfMMAdapter, batch: Batch) -> dict[str, torch.Tensor]:
    adapter.model.eval()
    with torch.no_grad():
        return adapter.predict(batch)


def non_bert(adapter: SelfMMAdapter) -> dict[str, torch.Tensor]:
    return {k: v for k, v in adapter.model.state_dict().items() if not k.startswith("text_model.")}


# --------------------------------------------------------------------------- parity


def test_state_dict_matches_reference_table(bert768: str) -> None:
    split = make_split(audio_dim=5, vision_dim=20)
    adapter, _ = make_adapter(split=split, preset="mosi", text_encoder=bert768)
    rows = [line.split("\t") for line in REFERENCE_TSV.strip().splitlines()]
    state = non_bert(adapter)
    params = dict(adapter.model.named_parameters())
    buffers = dict(adapter.model.named_buffers())
    got = [
        [name, "x".join(str(d) for d in t.shape), "param" if name in params else "buffer"]
        for name, t in state.items()
    ]
    assert got == rows
    assert not [b for b in buffers if not b.startswith("text_model.")]
    assert sum(t.numel() for t in state.values()) == 159_332
    # BERT sits where MMSA's BertTextEncoder puts it.
    bert_keys = [k for k in adapter.model.state_dict() if k.startswith("text_model.")]
    assert bert_keys and all(k.startswith("text_model.model.") for k in bert_keys)
    assert "text_model.model.embeddings.word_embeddings.weight" in bert_keys


@pytest.mark.parametrize(
    ("preset", "audio_dim", "vision_dim", "expected"),
    [
        ("mosei", 74, 35, 165_668),  # MOSEI TSV row
        ("orig", 5, 20, 206_980),  # Self-MM repo hp, MOSI
        ("orig_mosei", 74, 35, 172_532),  # Self-MM repo hp, MOSEI
    ],
)
def test_parameter_counts_of_other_configs(
    bert768: str, preset: str, audio_dim: int, vision_dim: int, expected: int
) -> None:
    split = make_split(n=4, audio_dim=audio_dim, vision_dim=vision_dim)
    adapter, _ = make_adapter(split=split, preset=preset, text_encoder=bert768)
    state = non_bert(adapter)
    assert len(state) == 36
    assert sum(t.numel() for t in state.values()) == expected


def test_parameter_groups_follow_mmsa() -> None:
    adapter, _ = make_adapter(preset="mosi")
    groups = adapter.configure_optimizer().param_groups
    assert len(groups) == 5
    layers = adapter.model.text_model.model.config.num_hidden_layers
    # bert-base (12 layers) gives 76 / 123 tensors; the same naming rule gives 4+6L / 3+10L.
    assert len(groups[0]["params"]) == 4 + 6 * layers
    assert len(groups[1]["params"]) == 3 + 10 * layers
    settings = [(g["lr"], g["weight_decay"]) for g in groups]
    assert settings == five_group_settings(adapter.ctx.params)
    grouped = [id(t) for g in groups for t in g["params"]]
    assert sorted(grouped) == sorted(id(t) for t in adapter.model.parameters())
    assert len(groups[4]["params"]) == 24  # the 12 post_* Linear layers
    assert isinstance(adapter.configure_optimizer(), torch.optim.Adam)


def test_presets_and_registry() -> None:
    assert get_adapter("self_mm") is SelfMMAdapter
    assert set(SelfMMAdapter.tasks) == {Task.BINARY, Task.SEVEN, Task.REGRESSION}
    keys = set(SelfMMAdapter.presets["mosi"])
    for name, preset in SelfMMAdapter.presets.items():
        assert set(preset) == keys, name
        assert all(k in preset for k in HARNESS_KEYS)
    assert SelfMMAdapter.presets["default"] == SelfMMAdapter.presets["mosi"]
    mosi, mosei = SelfMMAdapter.presets["mosi"], SelfMMAdapter.presets["mosei"]
    assert (mosi["batch_size"], mosi["learning_rate_video"], mosi["update_epochs"]) == (16, 5e-3, 4)
    assert (mosei["batch_size"], mosei["learning_rate_video"]) == (32, 1e-4)
    assert SelfMMAdapter.presets["orig"]["exclude_zero"] is False
    assert set(SelfMMAdapter.search_space) <= keys
    with pytest.raises(ConfigError, match="did you mean"):
        SelfMMAdapter.resolve_params("mosi", {"learning_rate_bertt": 1.0})


# --------------------------------------------------------------------------- ULGM


def test_centres_exclude_zero_labels_and_use_own_pseudo_labels() -> None:
    dims = {"f": 2, "t": 2, "a": 1, "v": 1}
    ulgm = ULGM(4, dims)
    ulgm.init_labels(torch.tensor([1.0, -2.0, 0.0, 3.0]))
    feats = {
        "f": torch.tensor([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0], [3.0, 4.0]]),
        "t": torch.tensor([[2.0, 2.0], [4.0, 0.0], [9.0, 9.0], [0.0, 6.0]]),
        "a": torch.arange(4.0).unsqueeze(1),
        "v": torch.arange(4.0).unsqueeze(1),
    }
    ulgm.write_features(torch.arange(4), feats)
    # The text pseudo-label of sample 0 turns negative: text centres follow it, fusion ones not.
    ulgm.labels[ulgm.row("t"), 0] = -0.5
    ulgm.update_centres()
    assert torch.allclose(ulgm.centres["f"], torch.tensor([[2.0, 2.0], [0.0, 2.0]]))
    assert torch.allclose(ulgm.centres["t"], torch.tensor([[0.0, 6.0], [3.0, 1.0]]))
    assert torch.allclose(ulgm.centres["a"], torch.tensor([[1.5], [1.0]]))

    # excludeZero=false (the Self-MM repo): zero labels join the positive set.
    ulgm0 = ULGM(4, dims, exclude_zero=False)
    ulgm0.init_labels(torch.tensor([1.0, -2.0, 0.0, 3.0]))
    ulgm0.write_features(torch.arange(4), feats)
    ulgm0.update_centres()
    assert torch.allclose(ulgm0.centres["f"][0], torch.tensor([3.0, 3.0]))


def test_empty_centre_set_keeps_previous_centre() -> None:
    ulgm = ULGM(3, {"f": 1, "t": 1, "a": 1, "v": 1})
    ulgm.init_labels(torch.tensor([1.0, 2.0, 0.5]))
    ulgm.write_features(torch.arange(3), {m: torch.tensor([[1.0], [2.0], [3.0]]) for m in "ftav"})
    ulgm.update_centres()
    assert torch.isfinite(ulgm.centres["f"]).all()
    assert ulgm.centres["f"][0].item() == pytest.approx(2.0)
    assert ulgm.centres["f"][1].item() == 0.0


def _single_sample_ulgm(y_m: float) -> ULGM:
    ulgm = ULGM(1, {"f": 2, "t": 2, "a": 2, "v": 2})
    ulgm.init_labels(torch.tensor([y_m]))
    ulgm.centres["f"] = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    for mode in "tav":
        ulgm.centres[mode] = torch.tensor([[1.0, 0.0], [-2.0, 0.0]])
    return ulgm


def test_label_update_by_hand_and_momentum() -> None:
    ulgm = _single_sample_ulgm(2.0)
    feats = {
        "f": torch.tensor([[0.5, 0.0]]),  # d_fp 0.5, d_fn 1.5 → δ_f = 2
        "t": torch.tensor([[0.0, 0.0]]),  # d_tp 1, d_tn 2 → δ_t = 1
        "a": torch.tensor([[0.0, 0.0]]),
        "v": torch.tensor([[1.0, 0.0]]),  # d_vp 0, d_vn 3 → δ_v = 3 / ε, clamped
    }
    index = torch.tensor([0])
    ulgm.update_labels(index, feats, epoch=2)
    # ŷ_t = 0.5·(δ_t/δ_f)·y + 0.5·(y + δ_t − δ_f) = 0.5·0.5·2 + 0.5·1 = 1; epoch 2: ⅓·2 + ⅔·1.
    assert ulgm.labels[1, 0].item() == pytest.approx(4 / 3, rel=1e-6)
    assert ulgm.labels[2, 0].item() == pytest.approx(4 / 3, rel=1e-6)
    # ŷ_v is far above H = 3 and clamps there: ⅓·2 + ⅔·3.
    assert ulgm.labels[3, 0].item() == pytest.approx(8 / 3, rel=1e-6)
    assert ulgm.labels[0, 0].item() == 2.0  # the fusion row is the ground truth, never updated
    # Epoch 3: ½·old + ½·new with the same candidate 1.
    ulgm.update_labels(index, feats, epoch=3)
    assert ulgm.labels[1, 0].item() == pytest.approx(0.5 * 4 / 3 + 0.5, rel=1e-6)
    assert ulgm.labels[3, 0].item() == pytest.approx(0.5 * 8 / 3 + 1.5, rel=1e-6)
    with pytest.raises(AdapterError, match="epoch 2"):
        ulgm.update_labels(index, feats, epoch=1)


def test_distance_is_plain_euclidean_not_squared() -> None:
    ulgm = _single_sample_ulgm(1.0)
    feats = {
        "f": torch.tensor([[0.5, 0.0]]),  # δ_f = 2
        "t": torch.tensor([[1.0, 2.0]]),  # d_tp = 2, d_tn = √13
        "a": torch.tensor([[0.0, 0.0]]),
        "v": torch.tensor([[0.0, 0.0]]),
    }
    ulgm.update_labels(torch.tensor([0]), feats, epoch=2)
    delta_t = (math.sqrt(13.0) - 2.0) / (2.0 + EPS)
    candidate = 0.5 * (delta_t / 2.0) * 1.0 + 0.5 * (1.0 + delta_t - 2.0)
    assert ulgm.labels[1, 0].item() == pytest.approx(1 / 3 + 2 / 3 * candidate, rel=1e-6)


def test_momentum_is_epoch_weighted_average_of_candidates() -> None:
    rng = np.random.default_rng(3)
    n = 5
    y = rng.uniform(-3, 3, n)
    ulgm = ULGM(n, {"f": 3, "t": 3, "a": 3, "v": 3})
    ulgm.init_labels(torch.tensor(y, dtype=torch.float32))
    ulgm.centres = {m: torch.tensor(rng.normal(size=(2, 3)), dtype=torch.float32) for m in "ftav"}
    weighted = 1.0 * y  # the initial y_M counts as the epoch-1 candidate
    for epoch in (2, 3, 4, 5):
        feats = {m: torch.tensor(rng.normal(size=(n, 3)), dtype=torch.float32) for m in "ftav"}

        def delta(m: str, feats: dict[str, torch.Tensor] = feats) -> np.ndarray:
            f, c = feats[m].double().numpy(), ulgm.centres[m].double().numpy()
            dp = np.linalg.norm(f - c[0], axis=1)
            dn = np.linalg.norm(f - c[1], axis=1)
            return (dn - dp) / (dp + EPS)

        d_f, d_t = delta("f"), delta("t")
        cand = np.clip(0.5 * (d_t / (d_f + EPS)) * y + 0.5 * (y + d_t - d_f), -3, 3)
        weighted = weighted + epoch * cand
        ulgm.update_labels(torch.arange(n), feats, epoch)
        expected = weighted / sum(range(1, epoch + 1))
        assert np.allclose(ulgm.labels[1].double().numpy(), expected, atol=1e-4)
        assert (ulgm.labels.abs() <= 3.0).all()


def test_loss_weights_are_tanh_of_label_gap() -> None:
    ulgm = ULGM(2, {"f": 1, "t": 1, "a": 1, "v": 1})
    ulgm.init_labels(torch.tensor([1.0, -1.0]))
    ulgm.labels[1] = torch.tensor([2.0, -1.0])
    ulgm.labels[3] = torch.tensor([-1.0, 0.5])
    w = ulgm.loss_weights(torch.tensor([1, 0]))
    expected = torch.tensor([[0.0, math.tanh(1.0)], [0.0, 0.0], [math.tanh(1.5), math.tanh(2.0)]])
    assert torch.allclose(w, expected)


# --------------------------------------------------------------------------- trainer order


def test_unimodal_losses_zero_in_epochs_1_and_2_then_nonzero() -> None:
    adapter, split = make_adapter(update_epochs=1)
    history = run_epochs(adapter, split, epochs=3)
    assert [h["T"] + h["A"] + h["V"] for h in history[:2]] == [0.0, 0.0]
    assert all(history[2][k] > 0 for k in "TAV")
    assert all(h["M"] > 0 for h in history)


def test_labels_fixed_in_epoch_1_then_updated_and_centres_refreshed_every_batch() -> None:
    adapter, split = make_adapter(update_epochs=1)
    tensors = SplitTensors(split, Task.REGRESSION)
    adapter.setup(split)
    adapter.train_mode()
    ulgm = adapter.ulgm
    assert ulgm is not None
    truth = torch.from_numpy(split.regression_labels)
    gen = torch.Generator().manual_seed(0)
    adapter.on_epoch_start(1)
    centres_seen = []
    for batch in tensors.batches(8):
        adapter.train_step(batch, gen)
        # Memory holds this batch's latest features; centres were refreshed after it.
        assert ulgm.features["f"][batch.index].abs().sum() > 0
        centres_seen.append(ulgm.centres["t"].clone())
    adapter.on_epoch_end(1)
    assert not torch.equal(centres_seen[0], centres_seen[1])
    assert torch.equal(ulgm.labels, truth.expand(4, -1))  # no update in epoch 1
    adapter.on_epoch_start(2)
    first = tensors.batch(torch.arange(8))
    adapter.train_step(first, gen)
    assert torch.equal(ulgm.labels[0], truth)
    assert not torch.equal(ulgm.labels[1:, :8], truth[:8].expand(3, -1))
    assert torch.equal(ulgm.labels[1:, 8:], truth[8:].expand(3, -1))  # others not yet visited


def test_zero_weighted_heads_still_get_zero_gradients_and_decay_drift() -> None:
    for decay, moves in ((1e-2, True), (0.0, False)):
        adapter, split = make_adapter(update_epochs=1, weight_decay_other=decay)
        adapter.setup(split)
        adapter.train_mode()
        before = adapter.model.post_audio_layer_3.weight.detach().clone()
        adapter.on_epoch_start(1)
        adapter.train_step(SplitTensors(split, Task.REGRESSION).batch(torch.arange(8)), None)
        grad = adapter.model.post_audio_layer_3.weight.grad
        assert grad is not None and torch.count_nonzero(grad) == 0
        changed = not torch.equal(adapter.model.post_audio_layer_3.weight, before)
        assert changed is moves


def test_gradient_accumulation_steps_every_group_and_drops_the_tail() -> None:
    adapter, split = make_adapter(update_epochs=4)
    tensors = SplitTensors(split, Task.REGRESSION)
    adapter.setup(split)
    adapter.train_mode()
    gen = torch.Generator().manual_seed(0)
    weight = adapter.model.post_fusion_layer_1.weight
    adapter.on_epoch_start(1)
    snapshots = []
    for start in range(0, N, 4):  # 6 batches of 4: one full group of 4, then a tail of 2
        adapter.train_step(tensors.batch(torch.arange(start, start + 4)), gen)
        snapshots.append(weight.detach().clone())
    assert torch.equal(snapshots[0], snapshots[2])  # no step inside a group
    assert not torch.equal(snapshots[2], snapshots[3])  # the 4th batch steps
    assert torch.equal(snapshots[3], snapshots[5])  # the tail is not stepped
    assert weight.grad is not None
    adapter.on_epoch_end(1)
    assert weight.grad is None  # discarded, never applied
    state = adapter.optimizer.state[weight]
    assert int(state["step"]) == 1


def test_accumulated_step_uses_summed_gradients() -> None:
    # The gradient at the step is the sum of the group's batch-mean gradients.
    adapter, split = make_adapter(update_epochs=2, post_fusion_dropout=0.0)
    tensors = SplitTensors(split, Task.REGRESSION)
    adapter.setup(split)
    adapter.model.eval()  # no dropout: the gradients are deterministic
    adapter.optimizer = adapter.configure_optimizer()
    adapter.on_epoch_start(1)
    b1, b2 = tensors.batch(torch.arange(0, 6)), tensors.batch(torch.arange(6, 12))
    w = adapter.model.post_fusion_layer_1.weight
    grads = []
    for b in (b1, b2):
        adapter.model.zero_grad(set_to_none=True)
        out = adapter.model(
            b.text_ids,
            b.text_mask,
            b.text_segments,
            b.audio,
            b.audio_lengths,
            b.vision,
            b.vision_lengths,
        )
        (out["M"] - b.score).abs().mean().backward()
        grads.append(w.grad.clone())
    adapter.model.zero_grad(set_to_none=True)
    adapter.train_step(b1, None)
    assert torch.allclose(w.grad, grads[0], atol=1e-6)
    step_before = adapter.optimizer.step
    captured = {}

    def spy(*args: object, **kwargs: object) -> None:
        captured["grad"] = w.grad.clone()
        return step_before(*args, **kwargs)

    adapter.optimizer.step = spy  # type: ignore[method-assign]
    adapter.train_step(b2, None)
    assert torch.allclose(captured["grad"], grads[0] + grads[1], atol=1e-6)


# --------------------------------------------------------------------------- model behaviour


@pytest.mark.parametrize(
    ("task", "classes"), [(Task.REGRESSION, None), (Task.BINARY, 3), (Task.SEVEN, 7)]
)
def test_forward_shapes_and_scores(task: Task, classes: int | None) -> None:
    adapter, split = make_adapter(task)
    batch = SplitTensors(split, task).batch(torch.arange(5))
    out = predict(adapter, batch)
    assert out["M"].shape == ((5,) if classes is None else (5, classes))
    assert all(out[k].shape == (5,) for k in "TAV")
    scores = adapter.scores({k: v.numpy() for k, v in out.items()}, {})
    if classes is None:
        assert scores.shape == (5,)
        assert np.allclose(scores, out["M"].numpy(), atol=1e-6)
    else:
        assert scores.shape == (5, classes)
        assert np.allclose(scores.sum(axis=1), 1.0)
        assert (scores.argmax(1) == out["M"].argmax(1).numpy()).all()


@pytest.mark.parametrize("task", [Task.REGRESSION, Task.BINARY, Task.SEVEN])
def test_loss_finite_and_decreasing_on_fixed_batch(task: Task) -> None:
    adapter, split = make_adapter(task, update_epochs=1, lr=1e-2, learning_rate_bert=3e-3)
    adapter.setup(split)
    adapter.train_mode()
    batch = SplitTensors(split, task).batch(torch.arange(N))
    gen = torch.Generator().manual_seed(0)
    adapter.on_epoch_start(1)
    losses = [float(adapter.train_step(batch, gen)) for _ in range(20)]
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_training_learns_above_chance_on_held_out_split() -> None:
    train = make_split(n=96, seed=0)
    valid = make_split(n=48, seed=1)
    adapter, _ = make_adapter(Task.REGRESSION, split=train, update_epochs=1)
    run_epochs(adapter, train, epochs=3, batch_size=16)
    out = predict(adapter, SplitTensors(valid, Task.REGRESSION).batch(torch.arange(48)))
    truth = valid.regression_labels
    assert np.corrcoef(out["M"].numpy(), truth)[0, 1] > 0.5


@pytest.mark.parametrize("aligned", [False, True])
def test_predictions_depend_on_every_modality(aligned: bool) -> None:
    adapter, split = make_adapter(aligned=aligned)
    batch = SplitTensors(split, Task.REGRESSION).batch(torch.arange(8))
    base = predict(adapter, batch)["M"]
    body = (batch.text_mask.bool()) & (batch.text_ids != CLS_ID) & (batch.text_ids != SEP_ID)
    variants = {
        "text": replace(batch, text_ids=torch.where(body, batch.text_ids + 7, batch.text_ids)),
        "audio": replace(batch, audio=batch.audio + 1.0),
        "vision": replace(batch, vision=batch.vision + 1.0),
    }
    for name, changed in variants.items():
        out = predict(adapter, changed)["M"]
        assert (out - base).abs().max() > 1e-5, name


def test_missing_view_batch_is_accepted() -> None:
    adapter, split = make_adapter()
    batch = SplitTensors(split, Task.REGRESSION).batch(torch.arange(8))
    keep = KeepMasks(
        text=batch.text_mask.bool(),
        audio=torch.zeros_like(batch.audio_mask, dtype=torch.bool),
        vision=batch.vision_mask.bool(),
    )
    missing = batch.with_missing(keep)
    out = predict(adapter, missing)["M"]
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, predict(adapter, batch)["M"])


def test_aligned_mode_packs_audio_and_vision_with_text_lengths() -> None:
    adapter, split = make_adapter(aligned=True, packed=True)
    batch = SplitTensors(split, Task.REGRESSION).batch(torch.arange(8))
    base = predict(adapter, batch)["M"]
    beyond_text = (~batch.text_mask.bool()).unsqueeze(-1)
    noisy = replace(
        batch,
        audio=batch.audio + 5.0 * beyond_text,
        vision=batch.vision - 5.0 * beyond_text,
        audio_lengths=torch.full_like(batch.audio_lengths, TEXT_LEN),
        vision_lengths=torch.ones_like(batch.vision_lengths),
    )
    assert torch.allclose(predict(adapter, noisy)["M"], base, atol=1e-6)


def test_unaligned_mode_uses_each_modality_length() -> None:
    adapter, split = make_adapter()
    batch = SplitTensors(split, Task.REGRESSION).batch(torch.arange(8))
    base = predict(adapter, batch)["M"]
    past_end = (~batch.audio_mask.bool()).unsqueeze(-1)
    assert torch.allclose(
        predict(adapter, replace(batch, audio=batch.audio + 3.0 * past_end))["M"], base, atol=1e-6
    )
    shorter = replace(batch, audio_lengths=(batch.audio_lengths - 1).clamp_min(1))
    assert not torch.allclose(predict(adapter, shorter)["M"], base)


def test_padded_gather_equals_packed_lstm() -> None:
    torch.manual_seed(0)
    packed = AuViSubNet(5, 7, 4, num_layers=2, dropout=0.0, packed=True)
    gathered = AuViSubNet(5, 7, 4, num_layers=2, dropout=0.0, packed=False)
    gathered.load_state_dict(packed.state_dict())
    x = torch.randn(6, 11, 5, requires_grad=True)
    lengths = torch.tensor([11, 1, 5, 0, 7, 3])  # a 0 is clamped to 1
    y_p = packed(x, lengths)
    y_g = gathered(x, lengths)
    assert torch.allclose(y_p, y_g, atol=1e-6)
    (g_p,) = torch.autograd.grad(y_p.sum(), x)
    (g_g,) = torch.autograd.grad(y_g.sum(), x)
    assert torch.allclose(g_p, g_g, atol=1e-6)
    assert torch.allclose(packed(x, torch.tensor([11, 1, 5, 1, 7, 3])), y_p)


def test_deterministic_under_manual_seed() -> None:
    results = []
    for _ in range(2):
        adapter, split = make_adapter(Task.BINARY, seed=5)
        torch.manual_seed(9)
        history = run_epochs(adapter, split, epochs=3)
        out = predict(adapter, SplitTensors(split, Task.BINARY).batch(torch.arange(N)))
        results.append((history, out["M"], adapter.ulgm.labels.clone()))
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1])
    assert torch.equal(results[0][2], results[1][2])


def test_checkpoint_round_trip_with_ulgm_state() -> None:
    adapter, split = make_adapter(Task.SEVEN, update_epochs=1)
    run_epochs(adapter, split, epochs=2)
    state = adapter.checkpoint_state()
    assert {k for k in state if k.startswith("__extra__.")} == {
        "__extra__.ulgm.labels",
        *(f"__extra__.ulgm.{kind}_{m}" for kind in ("features", "centres") for m in "ftav"),
    }
    assert state["__extra__.ulgm.features_f"].shape == (N, adapter.model.cfg.post_fusion_dim)
    fresh, _ = make_adapter(Task.SEVEN, split=split, seed=123)
    assert fresh.ulgm is None
    fresh.load_checkpoint_state(state)  # rebuilds the ULGM from the saved sizes
    batch = SplitTensors(split, Task.SEVEN).batch(torch.arange(N))
    assert torch.equal(predict(fresh, batch)["M"], predict(adapter, batch)["M"])
    for key, value in adapter.ulgm.state().items():
        assert torch.equal(fresh.ulgm.state()[key], value)
    # Into an adapter set up on another training split: sizes must agree.
    other, _ = make_adapter(Task.SEVEN, split=make_split(n=N + 1))
    other.setup(make_split(n=N + 1))
    with pytest.raises(AdapterError, match="shape"):
        other.load_checkpoint_state(state)


def test_train_step_requires_setup() -> None:
    adapter, split = make_adapter()
    adapter.train_mode()
    with pytest.raises(AdapterError, match="setup"):
        adapter.train_step(SplitTensors(split, Task.REGRESSION).batch(torch.arange(4)), None)


def test_tiny_default_text_encoder_width_flows_into_heads(tmp_path: Path) -> None:
    adapter, _ = make_adapter(preset="mosi")
    hidden = adapter.model.text_model.hidden_size
    assert hidden == 32
    assert adapter.model.post_text_layer_1.weight.shape == (32, hidden)
    assert adapter.model.post_fusion_layer_1.weight.shape == (128, hidden + 16 + 32)
    with pytest.raises(ConfigError, match=r"config\.json"):
        make_adapter(text_encoder=str(tmp_path))
