"""The two-step training procedure (docs/cider.md) and a smoke run."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from cider.losses import attention_loss, reconstruction_loss, representation_loss
from mer_bench.adapters import get_adapter
from mer_bench.corruption import CorruptionKind, TrainCorruption

from .helpers import full_batch, make_ctx, make_split

NO_DROPOUT = dict(
    embed_dropout=0.0, relu_dropout=0.0, res_dropout=0.0, out_dropout=0.0, attn_dropout=0.0
)


def _deterministic_adapter(aligned: bool = False):
    split = make_split(10, n=10, audio_len=14, vision_len=11, aligned=aligned)
    ad = get_adapter("cider")(make_ctx(split, aligned=aligned, **NO_DROPOUT))
    ad.setup(split)
    ad.train_mode()
    ad.model.text_model.eval()  # BERT's own dropout off, so passes can be replayed exactly
    return ad, full_batch(split)


def _grads(model, loss) -> dict[str, torch.Tensor]:
    names = [n for n, p in model.named_parameters()]
    params = [p for p in model.parameters()]
    got = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: g for n, g in zip(names, got) if g is not None}


@pytest.mark.parametrize("aligned", [False, True])
def test_two_steps_with_carried_gradient(aligned: bool) -> None:
    torch.manual_seed(0)
    ad, batch = _deterministic_adapter(aligned)
    theta0 = copy.deepcopy(ad.model)
    opt = ad.optimizer
    recorded: list[tuple[dict, dict]] = []
    original_step = opt.step

    def spying_step(*args, **kwargs):
        grads = {n: p.grad.clone() for n, p in ad.model.named_parameters() if p.grad is not None}
        out = original_step(*args, **kwargs)
        recorded.append((grads, copy.deepcopy(ad.model.state_dict())))
        return out

    opt.step = spying_step  # type: ignore[method-assign]
    gen = torch.Generator().manual_seed(5)
    corruption = ad.training_corruption()
    assert corruption == TrainCorruption(CorruptionKind.RATE, rate=0.5)
    mb = corruption.apply(batch, seed=5, epoch=1)
    loss = ad.train_step(mb, gen)
    assert len(recorded) == 2  # two optimiser steps per batch

    protos = ad._train_protos
    label = batch.label
    # Step 1: task gradient of the complete view at θ0.
    complete = theta0(
        batch.text_ids,
        batch.text_mask,
        batch.text_segments,
        batch.audio,
        batch.vision,
        batch.audio_mask,
        batch.vision_mask,
        *protos,
    )
    g1 = _grads(theta0, F.nll_loss(complete.pred, label))
    step1 = recorded[0][0]
    assert set(step1) == set(g1)
    assert not any(n.startswith("recon_") for n in step1)
    for n, g in g1.items():
        assert torch.allclose(step1[n], g, atol=1e-6, rtol=1e-4), n

    # Step 2 at θ1 with the teacher from θ0 and the replayed keep masks.
    theta1 = copy.deepcopy(theta0)
    theta1.load_state_dict(recorded[0][1])
    keep = mb.keep
    assert keep is not None and mb.complete_view is batch
    miss = theta1(
        mb.text_ids,
        mb.text_mask,
        mb.text_segments,
        mb.audio,
        mb.vision,
        mb.audio_mask,
        mb.vision_mask,
        *protos,
        reconstruct=True,
    )
    w = ad.weights
    expected = (
        F.nll_loss(miss.pred, label)
        + w.joint_rep * representation_loss(miss.joint_rep, complete.joint_rep)
        + w.attn * attention_loss(miss.attn, complete.attn)
        + w.recon
        * (
            reconstruction_loss(
                miss.text_recon, complete.text_hidden.detach(), batch.text_mask, keep.text
            )
            + reconstruction_loss(miss.audio_recon, batch.audio, batch.audio_mask, keep.audio)
            + reconstruction_loss(miss.vision_recon, batch.vision, batch.vision_mask, keep.vision)
        )
    )
    assert torch.allclose(loss, expected.detach(), atol=1e-5)
    g2 = _grads(theta1, expected)
    step2 = recorded[1][0]
    for n, g in g2.items():
        carried = g1.get(n, torch.zeros_like(g))
        assert torch.allclose(step2[n], g + carried, atol=1e-5, rtol=1e-4), n
    # The carried part is real: without it the step-2 gradient would differ.
    name = "classifiers.0.weight"
    assert not torch.allclose(step2[name], g2[name], atol=1e-6)

    # Adam: two steps for parameters of the complete pass, one for the reconstruction heads;
    # compression modules are untouched when aligned.
    state = {n: opt.state.get(p, {}) for n, p in ad.model.named_parameters()}
    assert int(state["proj_l.weight"]["step"]) == 2
    assert int(state["recon_text.weight"]["step"]) == 1
    assert ("step" in state["a_compress.in_proj_weight"]) is (not aligned)
    assert "step" not in state["text_model.model.pooler.dense.weight"]


def test_parameter_groups() -> None:
    ad, _ = _deterministic_adapter()
    groups = ad.optimizer.param_groups
    names = {id(p): n for n, p in ad.model.named_parameters()}
    decay, no_decay, rest = ([names[id(p)] for p in g["params"]] for g in groups)
    assert all(
        n.startswith("text_model.") and "bias" not in n and "LayerNorm" not in n for n in decay
    )
    assert "text_model.model.embeddings.LayerNorm.weight" in no_decay
    assert all(not n.startswith("text_model.") for n in rest)
    params = ad.ctx.params
    assert (
        groups[0]["weight_decay"] == params["weight_decay_bert"] and groups[1]["weight_decay"] == 0
    )
    assert groups[0]["lr"] == groups[1]["lr"] == params["lr_bert"]
    assert groups[2]["lr"] == params["lr"] and groups[2]["weight_decay"] == 0
    assert len(decay) + len(no_decay) + len(rest) == len(list(ad.model.parameters()))


def test_smoke_training_loss_decreases_and_is_deterministic() -> None:
    split = make_split(24, n=10, audio_len=14, vision_len=11)
    batch = full_batch(split)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        ad = get_adapter("cider")(make_ctx(split))
        ad.setup(split)
        ad.train_mode()
        gen = torch.Generator().manual_seed(1)
        runs.append(torch.stack([ad.train_step(batch, gen) for _ in range(10)]))
    losses = runs[0]
    assert torch.isfinite(losses).all()
    assert losses[-3:].mean() < losses[:3].mean() - 0.2
    assert torch.equal(runs[0], runs[1])
    assert not losses.requires_grad
