"""MulT baseline: reference parity (state dicts, counts, forward maths) and adapter behaviour."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from baselines.mult.adapter import MulTAdapter
from baselines.mult.model import (
    MulT,
    MulTConfig,
    SinusoidalPositionalEmbedding,
    TransformerEncoder,
    sinusoidal_table,
    visible_keys,
)
from mer_bench.adapters import AdapterContext, get_adapter
from mer_bench.batch import Batch, SplitTensors
from mer_bench.data.types import CLS_ID, SEP_ID, DataSpec, Split
from mer_bench.errors import ConfigError
from mer_bench.protocol import Task
from tests.baselines.helpers import listing, non_bert_params, read_tsv
from tests.conftest import REFERENCE_DIR

REFERENCE = REFERENCE_DIR

HARNESS_KEYS = {"batch_size", "max_epochs", "patience", "lr"}
NO_DROPOUT = {
    key: 0.0
    for key in (
        "text_dropout",
        "embed_dropout",
        "attn_dropout",
        "attn_dropout_a",
        "attn_dropout_v",
        "relu_dropout",
        "res_dropout",
        "output_dropout",
    )
}


# ----------------------------------------------------------------------------- helpers


def make_spec(
    text_dim: int | None,
    audio_dim: int,
    vision_dim: int,
    aligned: bool,
    task: Task = Task.REGRESSION,
    lengths: tuple[int, int, int] = (50, 375, 500),
) -> DataSpec:
    t, a, v = (lengths[0],) * 3 if aligned else lengths
    return DataSpec(t, a, v, audio_dim, vision_dim, text_dim, aligned, task)


def make_adapter(
    spec: DataSpec, preset: str = "synth", task: Task | None = None, **overrides
) -> MulTAdapter:
    task = task or spec.task
    params = MulTAdapter.resolve_params(preset, overrides)
    return MulTAdapter(AdapterContext.create(spec, params))


def make_split(
    n: int = 24,
    text_len: int = 12,
    audio_len: int = 30,
    vision_len: int = 40,
    feat_dim: int = 10,
    aligned: bool = False,
    seed: int = 0,
) -> Split:
    """A small split whose score is the sum of one component per modality."""
    rng = np.random.default_rng(seed)
    comps = rng.uniform(-1.0, 1.0, size=(n, 3))
    score = np.clip(comps.sum(axis=1) * 1.2, -3, 3).astype(np.float32)
    lengths = rng.integers(text_len // 2, text_len + 1, size=n)
    steps = np.arange(text_len)
    ids = np.where(comps[:, :1] > 0, 2000, 3000) + rng.integers(0, 20, size=(n, text_len))
    ids[:, 0] = CLS_ID
    ids[np.arange(n), lengths - 1] = SEP_ID
    mask = (steps[None] < lengths[:, None]).astype(np.int64)
    ids = ids * mask
    text_bert = np.stack([ids, mask, np.zeros_like(ids)], axis=1).astype(np.int64)
    table = np.random.default_rng(7).normal(size=(30522, feat_dim)).astype(np.float32)
    feats = table[ids] * mask[..., None]

    def stream(length: int, dim: int, comp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lens = lengths.copy() if aligned else rng.integers(int(0.4 * length), length + 1, size=n)
        x = rng.normal(size=(n, length, dim)) + comp[:, None, None]
        x *= (np.arange(length)[None] < lens[:, None])[..., None]
        return x.astype(np.float32), lens.astype(np.int64)

    if aligned:
        audio_len = vision_len = text_len
    audio, audio_lens = stream(audio_len, 5, comps[:, 1])
    vision, vision_lens = stream(vision_len, 6, comps[:, 2])
    return Split(
        name="train",
        sample_ids=np.array([f"v{i}$_$0" for i in range(n)], dtype=object),
        text_bert=text_bert,
        audio=audio,
        vision=vision,
        audio_lengths=audio_lens,
        vision_lengths=vision_lens,
        class_labels=(np.sign(score) + 1).astype(np.int64),
        regression_labels=score,
        text_feats=feats.astype(np.float32),
    )


def spec_of(split: Split, aligned: bool, task: Task) -> DataSpec:
    return DataSpec.from_split(split, aligned, task)


def full_batch(split: Split, task: Task) -> Batch:
    return SplitTensors(split, task).batch(torch.arange(split.size))


def train_losses(adapter: MulTAdapter, batch: Batch, steps: int) -> list[float]:
    adapter.train_mode()
    adapter.on_epoch_start(1)
    gen = torch.Generator().manual_seed(0)
    return [float(adapter.train_step(batch, gen)) for _ in range(steps)]


# ----------------------------------------------------------------------------- parity


@pytest.mark.parametrize(
    ("tsv", "preset", "dims", "aligned", "params", "buffers"),
    [
        ("mult_state_dict_mmsa_mosi_aligned.tsv", "mosi", (768, 5, 20), True, 2_571_551, 9),
        ("mult_state_dict_mmsa_mosi_unaligned.tsv", "mosi", (768, 5, 20), False, 2_571_551, 9),
        (
            "mult_state_dict_orig_mosi_aligned_glove300.tsv",
            "orig",
            (300, 5, 20),
            True,
            1_071_211,
            18,
        ),
    ],
)
def test_state_dict_matches_reference_table(tsv, preset, dims, aligned, params, buffers):
    adapter = make_adapter(make_spec(*dims, aligned=aligned), preset)
    mine = listing(adapter.model)
    reference = read_tsv(tsv)
    assert mine == reference
    assert non_bert_params(adapter.model) == params
    assert sum(kind == "buffer" for _, _, kind in mine) == buffers
    assert len(adapter.model.state_dict()) == len(reference)


@pytest.mark.parametrize(
    ("preset", "dims", "overrides", "expected"),
    [
        ("mosei", (768, 74, 35), {}, 982_951),  # MMSA MOSEI (docs/baselines.md, extra row)
        ("paper", (300, 5, 20), {}, 1_539_241),  # paper Table 5 MOSI geometry
        ("paper", (300, 5, 20), {"conv_kernel_l": 3}, 1_563_241),
        ("paper_mosei", (300, 74, 35), {}, 1_549_321),
        ("orig", (300, 5, 20), {"nlevels": 4}, 872_131),
    ],
)
def test_parameter_counts_match_closed_form(preset, dims, overrides, expected):
    adapter = make_adapter(make_spec(*dims, aligned=False), preset, **overrides)
    assert non_bert_params(adapter.model) == expected


def test_closed_form_breakdown_of_mmsa_mosi():
    model = make_adapter(make_spec(768, 5, 20, aligned=True), "mosi").model

    def count(prefix: str) -> int:
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))

    assert [count(f"proj_{m}.") for m in "lav"] == [192_000, 1_250, 5_000]
    assert count("trans_l_with_a.") == 122_700
    assert count("trans_v_mem.") == 485_400
    assert count("proj1.") == count("proj2.") == 90_300
    assert count("out_layer.") == 301


def test_use_bert_only_adds_the_text_model():
    spec = make_spec(None, 5, 20, aligned=True, lengths=(50, 50, 50))
    adapter = make_adapter(spec, "mosi", use_bert=True)
    names = list(adapter.model.state_dict())
    assert names[0].startswith("text_model.model.")
    # The tiny BERT has hidden size 32, so only proj_l's input width changes.
    expected = [
        (n, "50x32x5" if n == "proj_l.weight" else s, k)
        for n, s, k in read_tsv("mult_state_dict_mmsa_mosi_aligned.tsv")
    ]
    assert listing(adapter.model) == expected


# ----------------------------------------------------------------------------- maths


def test_sinusoidal_table_reference_values():
    table = sinusoidal_table(4, 30)
    cols = [0, 1, 14, 15, 16, 29]
    expected = torch.tensor(
        [
            [0, 0, 0, 0, 0, 0],
            [0.841471, 0.495098, 0.000100, 0.540302, 0.868837, 1.000000],
            [0.909297, 0.860319, 0.000200, -0.416147, 0.509756, 1.000000],
            [0.141120, 0.999856, 0.000300, -0.989992, 0.016953, 1.000000],
        ]
    )
    torch.testing.assert_close(table[:, cols], expected, atol=2e-6, rtol=0)
    odd = sinusoidal_table(3, 7)
    assert odd.shape == (3, 7)
    assert torch.all(odd[:, -1] == 0)


def test_positions_are_absolute_and_zero_channel_gets_no_embedding():
    pe = SinusoidalPositionalEmbedding(6)
    channel0 = torch.tensor([[0.5, 0.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    out = pe(channel0)
    table = sinusoidal_table(5, 6)
    torch.testing.assert_close(out[0], torch.stack([table[1], table[0], table[3], table[0]]))
    torch.testing.assert_close(out[1], table[1:5])


def test_attention_mask_examples():
    rows = visible_keys(3, 6, torch.device("cpu"))
    assert rows is not None
    assert rows.int().tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]
    assert visible_keys(6, 3, torch.device("cpu")) is None
    square = visible_keys(4, 4, torch.device("cpu"))
    assert square is not None and torch.equal(square, torch.ones(4, 4, dtype=torch.bool).tril())
    # Tk < Tq but close: the formula j >= i + 1 + |Tk - Tq| still hides some keys.
    near = visible_keys(6, 5, torch.device("cpu"))
    assert near is not None and not bool(near[0, 2]) and bool(near[0, 1])


def _reference_table(rows: int, dim: int) -> torch.Tensor:
    half = dim // 2
    out = np.zeros((rows, dim))
    for p in range(1, rows):
        for k in range(half):
            w = math.exp(-k * math.log(10000) / (half - 1))
            out[p, k], out[p, half + k] = math.sin(p * w), math.cos(p * w)
    return torch.tensor(out, dtype=torch.float32)


def _reference_encoder(enc: TransformerEncoder, x_in, x_k=None, pos=True) -> torch.Tensor:
    """docs/baselines.md written out literally, time-major (T, B, E)."""
    dim = x_in.shape[-1]

    def embed(t):
        y = math.sqrt(dim) * t
        if pos:
            steps = t.shape[0]
            idx = torch.arange(1, steps + 1).unsqueeze(1).expand(steps, t.shape[1]).clone()
            idx[t[:, :, 0] == 0] = 0
            y = y + _reference_table(steps + 1, dim)[idx]
        return y

    x = embed(x_in)
    k_src = embed(x_k) if x_k is not None else None
    for layer in enc.layers:
        ln0, ln1 = layer.layer_norms
        attn = layer.self_attn
        heads, hd = attn.num_heads, dim // attn.num_heads
        q_in = ln0(x)
        kv_in = ln0(k_src) if k_src is not None else q_in
        w, b = attn.in_proj_weight, attn.in_proj_bias
        q = (q_in @ w[:dim].T + b[:dim]) * hd**-0.5
        k = kv_in @ w[dim : 2 * dim].T + b[dim : 2 * dim]
        v = kv_in @ w[2 * dim :].T + b[2 * dim :]
        tq, bsz, tk = q.shape[0], q.shape[1], k.shape[0]

        qh = q.reshape(tq, bsz * heads, hd).transpose(0, 1)
        kh = k.reshape(tk, bsz * heads, hd).transpose(0, 1)
        vh = v.reshape(tk, bsz * heads, hd).transpose(0, 1)
        scores = torch.bmm(qh, kh.transpose(1, 2))
        scores = scores + torch.triu(torch.full((tq, tk), float("-inf")), 1 + abs(tk - tq))
        probs = torch.softmax(scores.float(), dim=-1)
        ctx = torch.bmm(probs, vh).transpose(0, 1).reshape(tq, bsz, dim)
        x = x + attn.out_proj(ctx)
        x = x + layer.fc2(torch.relu(layer.fc1(ln1(x))))
    return enc.layer_norm(x)


def _reference_mult(model: MulT, text, audio, vision) -> torch.Tensor:
    streams = {}
    for m, x in zip("lav", (text, audio, vision)):
        conv = getattr(model, f"proj_{m}")
        streams[m] = F.conv1d(x.transpose(1, 2), conv.weight).permute(2, 0, 1)
    last = []
    for tgt in "lav":
        srcs = [s for s in "lav" if s != tgt]
        h = torch.cat(
            [
                _reference_encoder(
                    getattr(model, f"trans_{tgt}_with_{s}"), streams[tgt], streams[s]
                )
                for s in srcs
            ],
            dim=2,
        )
        last.append(_reference_encoder(getattr(model, f"trans_{tgt}_mem"), h)[-1])
    last_hs = torch.cat(last, dim=1)
    z = model.proj2(torch.relu(model.proj1(last_hs))) + last_hs
    return model.out_layer(z)


def test_forward_matches_literal_specification():
    torch.manual_seed(3)
    config = MulTConfig(
        text_dim=7,
        audio_dim=5,
        vision_dim=6,
        out_dim=2,
        d_model=12,
        num_heads=3,
        nlevels=2,
        kernel_l=1,
        kernel_a=3,
        kernel_v=2,
        pos_embedding=True,
    )
    model = MulT(config).eval()
    text = torch.randn(2, 10, 7)
    audio = torch.randn(2, 17, 5)
    audio[:, 13:] = 0.0  # right padding: exact-zero conv outputs get position index 0
    vision = torch.randn(2, 9, 6)  # T'_v = 8 < T'_l = 10: partially masked
    with torch.no_grad():
        ours = model(text, audio, vision)["M"]
        ref = _reference_mult(model, text, audio, vision)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_last_only_equals_last_step_of_full_output():
    torch.manual_seed(0)
    enc = TransformerEncoder(16, 2, 3, 0.0, 0.0, 0.0, 0.0, attn_mask=True, pos_embedding=True)
    x = torch.randn(3, 11, 16)
    with torch.no_grad():
        torch.testing.assert_close(enc(x, last_only=True)[:, 0], enc(x)[:, -1])


def test_key_and_value_get_independent_embedding_dropout(monkeypatch):
    enc = TransformerEncoder(8, 2, 1, 0.0, 0.0, 0.0, 0.5, attn_mask=True, pos_embedding=False)
    calls = []
    original = enc._embed
    monkeypatch.setattr(enc, "_embed", lambda t: calls.append(t) or original(t))
    query, source = torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    enc.train()
    enc(query, source, source)
    assert len(calls) == 3  # query, key and value each draw their own mask
    calls.clear()
    enc.eval()
    enc(query, source, source)
    assert len(calls) == 2  # without dropout K and V are identical and shared


def test_conv_is_skipped_when_input_width_equals_d():
    config = MulTConfig(
        text_dim=12,
        audio_dim=5,
        vision_dim=6,
        out_dim=1,
        d_model=12,
        num_heads=3,
        nlevels=1,
        kernel_l=3,
        kernel_a=3,
        kernel_v=3,
    )
    model = MulT(config)
    assert model.proj_l.weight.shape == (12, 12, 3)  # still registered, as in the reference
    assert config.projected_len("l", 10) == 10 and config.projected_len("a", 10) == 8
    text = torch.randn(2, 10, 12)
    assert torch.equal(model._project("l", text), text)


def test_initialisation_follows_reference():
    model = MulT(
        MulTConfig(
            text_dim=9, audio_dim=5, vision_dim=6, out_dim=1, d_model=20, num_heads=4, nlevels=2
        )
    )
    attn = model.trans_l_with_a.layers[0].self_attn
    assert attn.in_proj_weight.abs().max() <= math.sqrt(6 / (20 + 60))
    assert torch.all(attn.in_proj_bias == 0) and torch.all(attn.out_proj.bias == 0)
    assert torch.all(model.trans_a_mem.layers[1].fc1.bias == 0)
    assert model.proj_l.bias is None
    assert model.proj1.weight.abs().max() <= 1 / math.sqrt(120)


# ----------------------------------------------------------------------------- adapter


def test_registry_and_presets():
    assert get_adapter("mult") is MulTAdapter
    assert MulTAdapter.tasks == (Task.BINARY, Task.SEVEN, Task.REGRESSION)
    keys = set(MulTAdapter.presets["mosi"])
    assert HARNESS_KEYS <= keys
    for name, preset in MulTAdapter.presets.items():
        # eval_batch_size is the optional harness parameter (only the synth preset sets it)
        assert set(preset) - {"eval_batch_size"} == keys, name
    assert MulTAdapter.presets["default"] == MulTAdapter.presets["mosi"]
    assert set(MulTAdapter.search_space) <= keys


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("task", [Task.BINARY, Task.SEVEN, Task.REGRESSION])
def test_forward_shapes_and_scores(task, aligned):
    split = make_split(n=6, aligned=aligned)
    adapter = make_adapter(spec_of(split, aligned, task))
    adapter.model.eval()
    with torch.no_grad():
        out = adapter.predict(full_batch(split, task))
    scores = adapter.scores({k: v.numpy() for k, v in out.items()}, {})
    if task is Task.REGRESSION:
        assert scores.shape == (6,)
    else:
        classes = task.info.num_classes
        assert scores.shape == (6, classes)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
        assert np.all(scores >= 0)


@pytest.mark.parametrize("task", [Task.BINARY, Task.SEVEN, Task.REGRESSION])
def test_loss_finite_and_decreasing(task):
    split = make_split(n=16, aligned=False)
    torch.manual_seed(0)
    adapter = make_adapter(spec_of(split, False, task))
    losses = train_losses(adapter, full_batch(split, task), steps=15)
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])


def test_regression_uses_l1_loss():
    split = make_split(n=8)
    adapter = make_adapter(spec_of(split, False, Task.REGRESSION), **NO_DROPOUT)
    batch = full_batch(split, Task.REGRESSION)
    adapter.model.eval()
    with torch.no_grad():
        pred = adapter.predict(batch)["score"]
    adapter.train_mode()
    adapter.on_epoch_start(1)
    loss = adapter.train_step(batch, torch.Generator())
    torch.testing.assert_close(loss, (pred - batch.label).abs().mean())


@pytest.mark.parametrize("modality", ["text_feats", "audio", "vision"])
def test_predictions_depend_on_every_modality(modality):
    split = make_split(n=4)
    adapter = make_adapter(spec_of(split, False, Task.REGRESSION))
    adapter.model.eval()
    batch = full_batch(split, Task.REGRESSION)
    original = getattr(batch, modality)
    noise = torch.randn(original.shape, generator=torch.Generator().manual_seed(5))
    changed = replace(batch, **{modality: original + 0.5 * noise})
    with torch.no_grad():
        before = adapter.predict(batch)["score"]
        after = adapter.predict(changed)["score"]
    assert torch.all((before - after).abs() > 1e-6)


def test_bert_variant_depends_on_tokens():
    split = make_split(n=4, aligned=True)
    spec = spec_of(split, True, Task.BINARY)
    torch.manual_seed(0)
    adapter = make_adapter(spec, use_bert=True)
    adapter.model.eval()
    batch = full_batch(split, Task.BINARY)
    ordinary = batch.text_mask.bool() & (batch.text_ids > 103)
    changed = replace(batch, text_ids=torch.where(ordinary, batch.text_ids + 1, batch.text_ids))
    with torch.no_grad():
        a = adapter.predict(batch)["logits"]
        b = adapter.predict(changed)["logits"]
    assert a.shape == (4, 3)
    assert not torch.allclose(a, b)
    losses = train_losses(adapter, batch, steps=3)
    assert all(math.isfinite(v) for v in losses)


def test_deterministic_under_seed():
    split = make_split(n=12)
    batch = full_batch(split, Task.SEVEN)
    runs = []
    for _ in range(2):
        torch.manual_seed(1234)
        adapter = make_adapter(spec_of(split, False, Task.SEVEN))
        runs.append((train_losses(adapter, batch, steps=4), adapter.model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for name, value in runs[0][1].items():
        assert torch.equal(value, runs[1][1][name]), name


def test_checkpoint_round_trip(tmp_path):
    split = make_split(n=8)
    spec = spec_of(split, False, Task.BINARY)
    batch = full_batch(split, Task.BINARY)
    torch.manual_seed(0)
    trained = make_adapter(spec)
    train_losses(trained, batch, steps=3)
    path = tmp_path / "mult.safetensors"
    save_file(trained.checkpoint_state(), str(path))
    torch.manual_seed(99)
    fresh = make_adapter(spec)
    fresh.load_checkpoint_state(load_file(str(path)))
    trained.model.eval()
    fresh.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            fresh.predict(batch)["logits"], trained.predict(batch)["logits"], atol=0, rtol=0
        )


def _grads(adapter: MulTAdapter) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in adapter.model.named_parameters() if p.grad is not None}


def test_gradient_accumulation_sums_groups_and_drops_leftovers():
    split = make_split(n=8)
    spec = spec_of(split, False, Task.REGRESSION)
    b1 = SplitTensors(split, Task.REGRESSION).batch(torch.arange(4))
    b2 = SplitTensors(split, Task.REGRESSION).batch(torch.arange(4, 8))
    gen = torch.Generator()

    torch.manual_seed(0)
    # update_epochs large: both gradients are taken at the initial parameters.
    single = make_adapter(spec, grad_clip=-1.0, update_epochs=100, **NO_DROPOUT)
    single.train_mode()
    single.on_epoch_start(1)
    single.train_step(b1, gen)
    g1 = _grads(single)
    single.on_epoch_start(2)
    single.train_step(b2, gen)
    g2 = _grads(single)

    torch.manual_seed(0)
    acc = make_adapter(spec, **NO_DROPOUT, grad_clip=-1.0, update_epochs=3)
    before = {n: p.detach().clone() for n, p in acc.model.named_parameters()}
    acc.train_mode()
    acc.on_epoch_start(1)
    acc.train_step(b1, gen)
    acc.train_step(b2, gen)
    summed = _grads(acc)
    for name, grad in summed.items():
        torch.testing.assert_close(grad, g1[name] + g2[name], atol=1e-6, rtol=1e-5)
    after = dict(acc.model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)  # no step before 3 batches
    # A new epoch discards the incomplete group (MMSA never steps it).
    acc.on_epoch_start(2)
    acc.train_step(b1, gen)
    torch.testing.assert_close(_grads(acc)["out_layer.weight"], g1["out_layer.weight"])
    acc.train_step(b2, gen)
    acc.train_step(b1, gen)
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_gradient_clip_by_value_and_norm():
    split = make_split(n=8)
    spec = spec_of(split, False, Task.REGRESSION)
    batch = full_batch(split, Task.REGRESSION)
    value = make_adapter(spec, **NO_DROPOUT, grad_clip=1e-4, update_epochs=2)
    value.train_mode()
    value.on_epoch_start(1)
    value.train_step(batch, torch.Generator())
    grads = _grads(value)
    assert max(float(g.abs().max()) for g in grads.values()) <= 1e-4 + 1e-12
    norm = make_adapter(spec, **NO_DROPOUT, grad_clip=1e-3, clip_mode="norm", update_epochs=2)
    norm.train_mode()
    norm.on_epoch_start(1)
    norm.train_step(batch, torch.Generator())
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in _grads(norm).values()]))
    assert float(total) <= 1e-3 * (1 + 1e-4)


def test_downsampling_only_in_synth_preset():
    spec = make_spec(32, 5, 20, aligned=False)
    synth = make_adapter(spec, "synth").model.config
    assert (synth.stride_l, synth.stride_a, synth.stride_v) == (1, 12, 16)
    for preset in ("mosi", "mosei", "orig", "paper"):
        config = make_adapter(make_spec(768, 5, 20, aligned=False), preset).model.config
        assert (config.stride_l, config.stride_a, config.stride_v) == (1, 1, 1)


@pytest.mark.parametrize(
    ("overrides", "spec_text_dim", "message"),
    [
        ({"num_heads": 3}, 32, "multiple of num_heads"),
        ({}, None, "use_bert"),
        ({"conv_kernel_l": 60}, 32, "conv_kernel_l"),
        ({"clip_mode": "l2"}, 32, "clip_mode"),
        ({"update_epochs": 0}, 32, "update_epochs"),
    ],
)
def test_config_errors(overrides, spec_text_dim, message):
    with pytest.raises(ConfigError, match=message):
        make_adapter(make_spec(spec_text_dim, 5, 20, aligned=False), **overrides)
