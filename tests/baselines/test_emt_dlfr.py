"""EMT-DLFR baseline: state-dict parity, weight sharing, literal transcriptions, adapter behaviour."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from baselines.emt_dlfr.adapter import EMTDLFRAdapter, thin_frames, view_inputs
from baselines.emt_dlfr.model import EMTDLFR, EMTDLFRConfig
from mer_bench.adapters import AdapterContext, get_adapter
from mer_bench.batch import Batch, SplitTensors
from mer_bench.conformance import check_adapter, tiny_split
from mer_bench.corruption import CorruptionKind, TrainCorruption
from mer_bench.data.types import UNK_ID, DataSpec
from mer_bench.errors import ConfigError
from mer_bench.protocol import Alignment, Dataset, DataSetting, Distribution, Task
from tests.baselines.helpers import five_group_settings, listing
from tests.conftest import REFERENCE_DIR

TSV = REFERENCE_DIR / "emtdlfr_state_dict_mosi_unaligned.tsv"
HARNESS_KEYS = ("batch_size", "max_epochs", "patience", "lr")


def make_spec(
    task: Task = Task.REGRESSION,
    audio_dim: int = 5,
    vision_dim: int = 7,
    lengths: tuple[int, int, int] = (12, 20, 24),
    aligned: bool = False,
) -> DataSpec:
    return DataSpec(*lengths, audio_dim, vision_dim, None, aligned, task)


def make_adapter(
    spec: DataSpec | None = None,
    preset: str = "synth",
    text_encoder: str | None = None,
    seed: int = 0,
    **overrides: object,
) -> EMTDLFRAdapter:
    spec = spec or make_spec()
    alignment = Alignment.ALIGNED if spec.aligned else Alignment.UNALIGNED
    data = DataSetting(Dataset.SYNTH, Distribution.IID, alignment, spec.task)
    # Every frame, whatever the preset: these tests check the model, not synth's shortcut.
    overrides = {"downsample_to": 0, **overrides}
    params = EMTDLFRAdapter.resolve_params(preset, overrides)
    torch.manual_seed(seed)
    ctx = AdapterContext(data=data, spec=spec, params=params, text_encoder=text_encoder)
    return EMTDLFRAdapter(ctx)


def unique_non_bert(model: nn.Module) -> list[torch.Tensor]:
    return [p for n, p in model.named_parameters() if not n.startswith("text_model.")]


def corrupted_batch(spec: DataSpec, n: int = 8, rate: float = 0.5, seed: int = 1) -> Batch:
    split = tiny_split(spec, n, seed=seed)
    batch = SplitTensors(split, spec.task).batch(torch.arange(n))
    return TrainCorruption(kind=CorruptionKind.RATE, rate=rate).apply(batch, seed=5, epoch=1)


# --------------------------------------------------------------------------- state dicts


def test_state_dict_matches_the_reference_table(bert768: str) -> None:
    adapter = make_adapter(
        make_spec(audio_dim=5, vision_dim=20, lengths=(50, 375, 500)), "mosi", bert768
    )
    lines = TSV.read_text().splitlines()
    assert lines[0].split("\t") == ["name", "shape", "kind"]
    reference = [tuple(line.split("\t")) for line in lines[1:] if line]
    mine = listing(adapter.model)
    assert mine == reference
    assert len(mine) == 452
    assert sum(kind == "buffer" for _, _, kind in mine) == 25
    unique = unique_non_bert(adapter.model)
    assert len(unique) == 79
    assert sum(p.numel() for p in unique) == 2_322_779
    inference = sum(
        p.numel()
        for n, p in adapter.model.named_parameters()
        if not n.startswith("text_model.")
        and not any(s in n for s in ("projector", "predictor", "recon"))
    )
    assert inference == 985_906
    bert_keys = [k for k in adapter.model.state_dict() if k.startswith("text_model.")]
    assert bert_keys and all(k.startswith("text_model.model.") for k in bert_keys)


def test_mosei_widths(bert768: str) -> None:
    adapter = make_adapter(
        make_spec(audio_dim=74, vision_dim=35, lengths=(50, 500, 500)), "mosei", bert768
    )
    rows = {name: shape for name, shape, _ in listing(adapter.model)}
    # LSTMs as wide as their outputs: linear_1 is an Identity without state-dict entries.
    assert not [n for n in rows if ".linear_1." in n]
    assert rows["audio_model.rnn.weight_ih_l0"] == "64x74"
    assert rows["audio_model.rnn.weight_hh_l0"] == "64x16"
    assert rows["video_model.rnn.weight_ih_l0"] == "128x35"
    assert rows["video_model.rnn.weight_hh_l0"] == "128x32"
    assert {n.split(".")[2] for n in rows if n.startswith("fusion.mpus.")} == {"0", "1"}
    assert sum(n.startswith("fusion.mpus.") for n in rows) == 2 * 3 * 2 * 20
    assert sum(n.startswith("fusion.attn_pools.") for n in rows) == 2 * 4
    assert rows["recon_audio.weight"] == "74x128"
    assert rows["recon_video.weight"] == "35x128"
    assert rows["post_fusion_layer_1.weight"] == "128x1200"
    assert rows["post_fusion_layer_2.weight"] == "128x128"
    assert rows["post_fusion_layer_3.weight"] == "1x128"
    assert len(rows) == 452 - 4 - 120 - 4

    assert sum(p.numel() for p in unique_non_bert(adapter.model)) == MOSEI_NON_BERT
    fusion = sum(p.numel() for n, p in adapter.model.named_parameters() if n.startswith("fusion."))
    assert fusion == MOSEI_PARTS["fusion"]


def _lstm(i: int, h: int) -> int:
    return 4 * h * (i + h) + 8 * h


# The MOSEI configuration's unique non-BERT parameters, component by component (closed form).
MOSEI_PARTS = {
    "audio_model": _lstm(74, 16),
    "video_model": _lstm(35, 32),
    "proj": 128 * (16 + 32 + 768),
    "fusion": 478_337,  # the shared block and pooling do not grow with depth
    "projectors": sum(d * d + d for d in (384, 768, 16, 32)),
    "predictors": sum(
        d * p + 2 * p + p * d + d for d, p in ((384, 128), (768, 256), (16, 8), (32, 16))
    ),
    "recon": 128 * 768 + 768 + 128 * 74 + 74 + 128 * 35 + 35,
    "head": 1200 * 128 + 128 + 128 * 128 + 128 + 128 + 1,
}
MOSEI_NON_BERT = sum(MOSEI_PARTS.values())


def test_describe_reproduces_the_table_and_the_mosei_count(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI, without data or weights: published MOSI/MOSEI widths and bert-base shapes."""
    from mer_bench.cli import main

    argv = ["describe", "emt_dlfr", "--alignment", "unaligned", "--task", "regression"]
    assert main([*argv, "--dataset", "mosi", "--state-dict"]) == 0
    assert capsys.readouterr().out == TSV.read_text()
    assert main([*argv, "--dataset", "mosei"]) == 0
    out = capsys.readouterr().out
    assert "preset\tmosei" in out
    assert f"non_bert_parameters\t{MOSEI_NON_BERT}" in out
    assert "non_bert_state_entries\t324" in out


def test_shared_block_and_pool_are_one_object_at_every_path() -> None:
    model = make_adapter(fusion_layers=3).model
    fusion = model.fusion
    blocks = [fusion.mpus[lay][m][d] for lay in range(3) for m in range(3) for d in range(2)]
    assert all(b is blocks[0] for b in blocks)
    assert all(p is fusion.attn_pools[0] for p in fusion.attn_pools)
    state = model.state_dict()
    first = state["fusion.mpus.0.0.0.layers.0.0.fn.to_q.weight"]
    last = state["fusion.mpus.2.2.1.layers.0.0.fn.to_q.weight"]
    assert first.data_ptr() == last.data_ptr()
    # Loading a state dict writes every duplicate key into the one tensor.
    state = {k: v.clone() for k, v in state.items()}
    state["fusion.attn_pools.1.attention.2.bias"].fill_(3.0)
    state["fusion.attn_pools.0.attention.2.bias"].fill_(3.0)
    state["fusion.attn_pools.2.attention.2.bias"].fill_(3.0)
    model.load_state_dict(state)
    assert float(fusion.attn_pools[0].attention[2].bias.detach()) == 3.0
    # The optimiser sees each shared tensor once ("other" group).
    groups = make_adapter(fusion_layers=3).configure_optimizer().param_groups
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


# --------------------------------------------------------------------------- literal forward


def literal_emt(
    fusion: nn.Module,
    gmc: torch.Tensor,
    local: list[torch.Tensor],
    masks: list[torch.Tensor],
    heads: int,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The EMT as the specification words it, written out with explicit tensor algebra."""
    b, _, d = gmc.shape
    block = fusion.mpus[0][0][0]
    pool = fusion.attn_pools[0]
    cross, self_attn, ff = block.layers[0]

    def layer_norm(mod: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(-1, keepdim=True)
        var = x.var(-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias

    def attend(att: nn.Module, x: torch.Tensor, ctx: torch.Tensor, mask) -> torch.Tensor:
        dh = d // heads
        q = (x @ att.to_q.weight.T).reshape(b, x.shape[1], heads, dh)
        kv = ctx @ att.to_kv.weight.T
        k = kv[..., :d].reshape(b, ctx.shape[1], heads, dh)
        v = kv[..., d:].reshape(b, ctx.shape[1], heads, dh)
        s = torch.einsum("bihc,bjhc->bhij", q, k) / math.sqrt(dh)
        if mask is not None:
            s = torch.where(mask[:, None, None, :], s, torch.full_like(s, -3.4028234663852886e38))
        p = torch.exp(s - s.amax(-1, keepdim=True))
        p = p / p.sum(-1, keepdim=True)
        o = torch.einsum("bhij,bjhc->bihc", p, v).reshape(b, x.shape[1], d)
        return o @ att.to_out.weight.T + att.to_out.bias

    def mpu(x, ctx, x_mask, ctx_mask):
        x = (
            attend(
                cross.fn, layer_norm(cross.norm, x), layer_norm(cross.norm_context, ctx), ctx_mask
            )
            + x
        )
        y = layer_norm(self_attn.norm, x)
        x = attend(self_attn.fn, y, y, x_mask) + x
        y = layer_norm(ff.norm, x)
        l1, l2 = ff.fn.net[0], ff.fn.net[2]
        hidden = y @ l1.weight.T + l1.bias
        value, gate = hidden[..., : hidden.shape[-1] // 2], hidden[..., hidden.shape[-1] // 2 :]
        gelu = 0.5 * gate * (1.0 + torch.erf(gate / math.sqrt(2.0)))
        return (value * gelu) @ l2.weight.T + l2.bias + x

    t_max = max(x.shape[1] for x in local)
    pe = torch.zeros(t_max, d)
    for pos in range(t_max):
        for k in range(d // 2):
            omega = 10000.0 ** (-2.0 * k / d)
            pe[pos, 2 * k] = math.sin(pos * omega)
            pe[pos, 2 * k + 1] = math.cos(pos * omega)
    xs = [x + pe[: x.shape[1]] for x in local]
    g = gmc
    for _ in range(len(fusion.mpus)):
        versions = [mpu(g, x, None, m) for x, m in zip(xs, masks)]
        xs = [mpu(x, g, m, None) for x, m in zip(xs, masks)]
        rows = torch.stack(versions, dim=1).reshape(b, 3, 3 * d)
        a0, a2 = pool.attention[0], pool.attention[2]
        score = torch.tanh(rows @ a0.weight.T + a0.bias) @ a2.weight.T + a2.bias
        weights = torch.exp(score) / torch.exp(score).sum(dim=1, keepdim=True)
        g = (weights * rows).sum(dim=1).reshape(b, 3, d)
    return g.reshape(b, 3 * d), xs


def test_fusion_matches_a_literal_transcription() -> None:
    torch.manual_seed(3)
    cfg = EMTDLFRConfig(audio_dim=5, vision_dim=7, d_model=16, heads=4, fusion_layers=2)
    model = EMTDLFR(cfg).eval()
    b = 3
    gmc = torch.randn(b, 3, 16)
    local = [torch.randn(b, 11, 16), torch.randn(b, 9, 16), torch.randn(b, 13, 16)]
    lengths = [torch.tensor([0, 4, 11]), torch.tensor([9, 1, 5]), torch.tensor([2, 13, 7])]
    masks = [torch.arange(x.shape[1])[None] < n[:, None] for x, n in zip(local, lengths)]
    with torch.no_grad():
        g, z = model.fusion(gmc, local, masks)
        g_ref, z_ref = literal_emt(model.fusion, gmc, local, masks, heads=4)
    torch.testing.assert_close(g, g_ref, atol=2e-5, rtol=1e-4)
    for mine, ref in zip(z, z_ref):
        torch.testing.assert_close(mine, ref, atol=2e-5, rtol=1e-4)
    # A text row whose keys are all masked (only [CLS]/[SEP]) stays finite.
    assert torch.isfinite(z[0][0]).all()


def test_packed_and_padded_encoders_compute_the_same_function() -> None:
    spec = make_spec()
    batch = corrupted_batch(spec)
    packed = make_adapter(spec, packed=True)
    padded = make_adapter(spec, packed=False)
    padded.model.load_state_dict(packed.model.state_dict())
    for a in (packed, padded):
        a.model.eval()
    with torch.no_grad():
        out_p = packed.model(view_inputs(batch.complete_view), view_inputs(batch))
        out_u = padded.model(view_inputs(batch.complete_view), view_inputs(batch))
    for key, value in out_p.items():
        if key.endswith("_recon") and key != "text_recon":
            value, other = value, out_u[key][:, : value.shape[1]]
        else:
            other = out_u[key]
        torch.testing.assert_close(value, other, atol=1e-5, rtol=1e-4)
    # The packed sequences stop at the batch's longest stream, as pad_packed_sequence does.
    assert out_p["audio_recon"].shape[1] == int(batch.audio_lengths.max())


# --------------------------------------------------------------------------- literal objective


def literal_total(out: dict[str, torch.Tensor], batch: Batch, task: Task) -> torch.Tensor:
    """The trainer's loss written as the specification states it, on the incomplete batch."""
    if task is Task.REGRESSION:
        criterion = nn.L1Loss()
        labels = batch.label.view(-1, 1)
    else:
        criterion = nn.CrossEntropyLoss()
        labels = batch.label
    cos = nn.CosineSimilarity(dim=1, eps=1e-8)
    loss_pred_m = criterion(out["pred_m"], labels)
    loss_pred = criterion(out["pred"], labels)
    loss_attra = 0.0
    for x in ("gmc_tokens", "text", "audio", "video"):
        loss_attra = (
            loss_attra
            - (
                cos(out[f"p_{x}_m"], out[f"z_{x}"]).mean()
                + cos(out[f"p_{x}"], out[f"z_{x}_m"]).mean()
            )
            * 0.5
        )
    loss_attra = loss_attra + loss_pred

    def recon(pred, target, mask):
        mask = mask.unsqueeze(-1).expand_as(pred).float()
        return nn.SmoothL1Loss(reduction="sum")(pred * mask, target * mask) / (mask.sum() + 1e-6)

    # The original's loader masks: length masks and 0/1 keep ("missing") masks.
    keep = batch.keep
    text_keep = keep.text.float() if keep is not None else batch.text_mask.float()
    text_m = batch.text_mask[:, 1:].float() - text_keep[:, 1:]
    t_a, t_v = out["audio_recon"].shape[1], out["video_recon"].shape[1]
    audio_len_mask = (torch.arange(t_a)[None] < batch.audio_lengths[:, None]).float()
    vision_len_mask = (torch.arange(t_v)[None] < batch.vision_lengths[:, None]).float()
    audio_keep = keep.audio[:, :t_a].float() if keep is not None else audio_len_mask
    vision_keep = keep.vision[:, :t_v].float() if keep is not None else vision_len_mask
    complete = batch.complete_view
    loss_recon = (
        recon(out["text_recon"], out["text_for_recon"], text_m)
        + recon(out["audio_recon"], complete.audio[:, :t_a], audio_len_mask - audio_keep)
        + recon(out["video_recon"], complete.vision[:, :t_v], vision_len_mask - vision_keep)
    )
    return loss_pred_m + 1.0 * loss_attra + 1.0 * loss_recon


@pytest.mark.parametrize("task", [Task.REGRESSION, Task.BINARY])
@pytest.mark.parametrize("packed", [True, False])
def test_objective_forward_backward_matches_the_literal_transcription(
    task: Task, packed: bool
) -> None:
    spec = make_spec(task)
    batch = corrupted_batch(spec, rate=0.4)
    assert batch.keep is not None and not torch.equal(batch.text_ids, batch.complete_view.text_ids)
    # update_epochs=2: the first step only accumulates, so the gradients stay readable.
    adapter = make_adapter(spec, update_epochs=2, packed=packed)
    reference = make_adapter(spec, update_epochs=2, packed=packed)
    reference.model.load_state_dict(adapter.model.state_dict())
    adapter.train_mode()
    reference.model.train()

    torch.manual_seed(11)  # BERT's dropout draws the same masks in both forwards
    loss = adapter.train_step(batch, torch.Generator().manual_seed(0))
    torch.manual_seed(11)
    out = reference.model(view_inputs(batch.complete_view), view_inputs(batch))
    expected = literal_total(out, batch, task)
    expected.backward()

    torch.testing.assert_close(loss, expected.detach(), atol=1e-6, rtol=1e-6)
    parts = adapter.last_losses
    assert parts is not None and all(float(v) > 0 for v in parts.reconstruction.values())
    grads = dict(adapter.model.named_parameters())
    checked = 0
    for name, p in reference.model.named_parameters():
        mine = grads[name].grad
        if p.grad is None:
            assert mine is None or not mine.any(), name
            continue
        torch.testing.assert_close(mine, p.grad, atol=1e-6, rtol=1e-5, msg=name)
        checked += 1
    assert checked > 60
    # The pooler is unused ([CLS] is read from the last hidden state): it gets no gradient.
    pooler = [n for n in grads if ".pooler." in n]
    assert pooler and all(grads[n].grad is None for n in pooler)


def test_without_corruption_the_reconstruction_loss_is_exactly_zero() -> None:
    spec = make_spec()
    split = tiny_split(spec, 8, seed=2)
    batch = SplitTensors(split, spec.task).batch(torch.arange(8))
    adapter = make_adapter(spec, train_missing_rate=0.0)
    assert adapter.training_corruption() is None
    adapter.train_mode()
    adapter.train_step(batch, torch.Generator())
    parts = adapter.last_losses
    assert parts is not None
    assert all(float(v) == 0.0 for v in parts.reconstruction.values())
    # Both views are the same batch (they differ only by BERT's dropout draws): the attraction
    # and the complete-view task loss remain in the total.
    assert all(-1.0 <= float(v) <= 1.0 for v in parts.attraction.values())
    attra = sum(float(v) for v in parts.attraction.values())
    expected = float(parts.task_missing) + attra + float(parts.task_complete)
    assert float(parts.total) == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- adapter


def test_training_corruption_follows_the_presets() -> None:
    default = make_adapter(preset="synth").training_corruption()
    assert default == TrainCorruption(kind=CorruptionKind.RATE, rate=0.5)
    assert default.per_epoch and default.fixed_seed is None
    paper = make_adapter(make_spec(lengths=(12, 20, 24)), preset="paper").training_corruption()
    assert paper is not None and paper.kind is CorruptionKind.RATE and paper.rate == 0.5
    assert not paper.per_epoch and paper.fixed_seed == 111
    assert make_adapter(train_missing_rate=0.3).training_corruption().rate == 0.3


def test_training_corruption_is_the_originals_random_feature_missing() -> None:
    spec = make_spec()
    split = tiny_split(spec, 16, seed=4)
    complete = SplitTensors(split, spec.task).batch(torch.arange(16))
    batch = make_adapter(train_missing_rate=0.5).training_corruption().apply(complete, 7, 1)
    keep = batch.keep
    assert keep is not None and batch.complete_view.keep is None
    dropped = complete.text_mask.bool() & ~keep.text
    assert dropped.any()
    assert (batch.text_ids[dropped] == UNK_ID).all()
    assert torch.equal(batch.text_mask, complete.text_mask)
    assert keep.text[:, 0].all()  # [CLS]
    last = complete.text_mask.sum(1) - 1
    assert keep.text[torch.arange(16), last].all()  # [SEP]
    assert (batch.audio[~keep.audio] == 0).all()
    assert torch.equal(batch.audio_lengths, complete.audio_lengths)


def test_accumulation_sums_four_batches_and_drops_the_tail() -> None:
    spec = make_spec()
    split = tiny_split(spec, 40, seed=5)
    data = SplitTensors(split, spec.task)
    adapter = make_adapter(spec, update_epochs=4, batch_size=8)
    adapter.train_mode()
    before = {n: p.detach().clone() for n, p in adapter.model.named_parameters()}
    adapter.on_epoch_start(1)
    batches = list(data.batches(8))
    for batch in batches[:3]:
        adapter.train_step(batch, torch.Generator())
    # Three batches: no step yet, the gradients are the running sum.
    assert all(torch.equal(p, before[n]) for n, p in adapter.model.named_parameters())
    adapter.train_step(batches[3], torch.Generator())
    steps = {int(s["step"]) for s in adapter.optimizer.state.values()}
    assert steps == {1}
    adapter.train_step(batches[4], torch.Generator())  # the tail of a 5-batch epoch
    adapter.on_epoch_end(1)
    assert all(p.grad is None for p in adapter.model.parameters())
    assert {int(s["step"]) for s in adapter.optimizer.state.values()} == {1}


def test_parameter_groups_follow_the_original() -> None:
    adapter = make_adapter(preset="mosi", spec=make_spec(lengths=(12, 20, 24)))
    groups = adapter.configure_optimizer().param_groups
    assert len(groups) == 5
    settings = [(g["lr"], g["weight_decay"]) for g in groups]
    assert settings == five_group_settings(adapter.ctx.params)
    model = adapter.model
    assert len(groups[2]["params"]) == 6 and len(groups[3]["params"]) == 6  # LSTM + linear_1
    other = {id(w) for w in groups[4]["params"]}
    assert id(model.fusion.mpus[0][0][0].layers[0][0].fn.to_q.weight) in other
    assert id(model.post_fusion_layer_3.bias) in other
    assert type(adapter.configure_optimizer()) is torch.optim.Adam  # coupled L2, not AdamW


def test_a_batch_of_one_is_skipped_in_training() -> None:
    spec = make_spec()
    split = tiny_split(spec, 4, seed=6)
    one = SplitTensors(split, spec.task).batch(torch.arange(1))
    adapter = make_adapter(spec)
    adapter.train_mode()
    loss = adapter.train_step(one, torch.Generator())
    assert float(loss) == 0.0 and all(p.grad is None for p in adapter.model.parameters())
    adapter.model.eval()
    with torch.no_grad():
        assert adapter.predict(one)["score"].shape == (1,)


@pytest.mark.parametrize("task", [Task.BINARY, Task.SEVEN, Task.REGRESSION])
def test_predict_shapes_and_scores(task: Task) -> None:
    spec = make_spec(task)
    split = tiny_split(spec, 6, seed=7)
    adapter = make_adapter(spec)
    adapter.model.eval()
    with torch.no_grad():
        out = adapter.predict(SplitTensors(split, task).batch(torch.arange(6)))
    scores = adapter.scores({k: v.numpy() for k, v in out.items()}, {})
    if task is Task.REGRESSION:
        assert scores.shape == (6,)
    else:
        assert scores.shape == (6, task.info.num_classes)
        np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-6)


def test_presets_and_registry() -> None:
    assert get_adapter("emt_dlfr") is EMTDLFRAdapter
    for name, preset in EMTDLFRAdapter.presets.items():
        assert all(k in preset for k in HARNESS_KEYS), name
    assert EMTDLFRAdapter.presets["paper"]["fixed_masks"] is True
    assert EMTDLFRAdapter.presets["mosi"]["fixed_masks"] is False
    assert set(EMTDLFRAdapter.search_space) <= set(EMTDLFRAdapter.presets["mosi"])
    with pytest.raises(ConfigError):
        make_adapter(train_missing_rate=1.5)
    with pytest.raises(ConfigError):
        make_adapter(d_model=15, heads=2)


def test_aligned_data_runs() -> None:
    spec = make_spec(lengths=(12, 12, 12), aligned=True)
    batch = corrupted_batch(spec)
    adapter = make_adapter(spec)
    adapter.train_mode()
    assert torch.isfinite(adapter.train_step(batch, torch.Generator()))


def test_changing_one_modality_changes_the_prediction() -> None:
    spec = make_spec()
    split = tiny_split(spec, 6, seed=8)
    batch = SplitTensors(split, spec.task).batch(torch.arange(6))
    adapter = make_adapter(spec)
    adapter.model.eval()
    with torch.no_grad():
        base = adapter.predict(batch)["score"]
        moved = adapter.predict(replace(batch, audio=batch.audio + 1.0))["score"]
    assert not torch.allclose(base, moved)


# --------------------------------------------------------------------------- conformance


@pytest.mark.slow
def test_conformance_suite_passes() -> None:
    results = check_adapter("emt_dlfr")
    failures = [f"{r.task}/{r.alignment} {r.check}: {r.detail}" for r in results if not r.ok]
    assert not failures, failures
    assert {r.task for r in results} == {"binary", "seven", "regression"}


def test_downsampling_thins_both_views_and_their_masks() -> None:
    spec = make_spec(lengths=(12, 20, 24))
    batch = corrupted_batch(spec, n=6)
    thin = thin_frames(batch, 4, 4)
    assert thin.audio.shape[1] == 5 and thin.vision.shape[1] == 6
    assert torch.equal(thin.audio, batch.audio[:, ::4])
    assert torch.equal(thin.complete_view.audio, batch.complete_view.audio[:, ::4])
    assert torch.equal(thin.keep.vision, batch.keep.vision[:, ::4])
    # The thinned length masks are exactly the first ceil(length / stride) frames.
    assert torch.equal(thin.audio_mask.sum(1), thin.audio_lengths)
    assert torch.equal(thin.vision_mask.sum(1), thin.vision_lengths)
    assert torch.equal(thin.text_ids, batch.text_ids)
    assert thin_frames(batch, 1, 1) is batch
    adapter = make_adapter(spec, downsample_to=5)
    assert adapter.frame_strides == (4, 5)  # ceil(20 / 5), ceil(24 / 5)
    adapter.train_mode()
    assert torch.isfinite(adapter.train_step(batch, torch.Generator()))
