"""MulT's blockwise dropout attention against PyTorch's fused call and the literal maths."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import baselines.mult.model as mult_model
from baselines.mult.attention import attention, chunked_attention, fused_attention
from baselines.mult.model import MulT, MulTConfig, visible_keys

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _qkv(b: int, h: int, tq: int, tk: int, d: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = ((b, h, tq, d), (b, h, tk, d), (b, h, tk, d))
    return [torch.randn(s, generator=gen, requires_grad=True) for s in shapes]


def _mask_kinds(tq: int, tk: int) -> tuple[torch.Tensor | None, bool]:
    if tq == tk:
        return None, True
    return visible_keys(tq, tk, torch.device("cpu")), False


def _literal(q, k, v, mask, causal, dropout_p, scale, kept=None) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) with the given kept weights scaled by 1/(1 - p), then · v."""
    scores = (q @ k.transpose(-1, -2)) * scale
    tq, tk = scores.shape[-2:]
    if causal:
        mask = torch.ones(tq, tk, dtype=torch.bool).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if kept is not None:
        weights = weights * kept / (1.0 - dropout_p)
    return weights @ v


def _kept_draws(shape: tuple[int, ...], block_rows: int, p: float, gen: torch.Generator):
    """The kept weights ``chunked_attention`` draws: one uniform draw per block of query rows."""
    b, h, tq, tk = shape
    blocks = [
        torch.rand((b * h, min(block_rows, tq - lo), tk), generator=gen) >= p
        for lo in range(0, tq, block_rows)
    ]
    return torch.cat(blocks, dim=1).view(b, h, tq, tk)


def _grads(out: torch.Tensor, inputs: list[torch.Tensor], seed: int = 1) -> list[torch.Tensor]:
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return list(torch.autograd.grad(out, inputs, upstream))


@pytest.mark.parametrize("tq,tk", [(7, 7), (5, 13), (13, 9), (6, 5)])
@pytest.mark.parametrize("block_rows", [1, 4, 64])
def test_without_dropout_equals_fused_sdpa(tq, tk, block_rows):
    q, k, v = _qkv(2, 3, tq, tk, 4)
    mask, causal = _mask_kinds(tq, tk)
    scale = 4**-0.5
    ours = chunked_attention(q, k, v, mask, causal, 0.0, scale, block_rows=block_rows)
    fused = fused_attention(q, k, v, mask, causal, 0.0, scale)
    torch.testing.assert_close(ours, fused, **TOL)
    for g_ours, g_fused in zip(_grads(ours, [q, k, v]), _grads(fused, [q, k, v]), strict=True):
        torch.testing.assert_close(g_ours, g_fused, **TOL)


@pytest.mark.parametrize("tq,tk", [(9, 9), (4, 11), (12, 7)])
@pytest.mark.parametrize("block_rows", [2, 5, 64])
def test_with_dropout_equals_literal_maths_on_the_same_draws(tq, tk, block_rows):
    q, k, v = _qkv(2, 2, tq, tk, 3, seed=4)
    mask, causal = _mask_kinds(tq, tk)
    p, scale = 0.3, 0.7
    ours = chunked_attention(
        q,
        k,
        v,
        mask,
        causal,
        p,
        scale,
        block_rows=block_rows,
        generator=torch.Generator().manual_seed(9),
    )
    kept = _kept_draws((*q.shape[:3], tk), block_rows, p, torch.Generator().manual_seed(9))
    assert 0 < int(kept.sum()) < kept.numel()  # dropout really removed some weights
    literal = _literal(q, k, v, mask, causal, p, scale, kept)
    torch.testing.assert_close(ours, literal, **TOL)
    for g_ours, g_lit in zip(_grads(ours, [q, k, v]), _grads(literal, [q, k, v]), strict=True):
        torch.testing.assert_close(g_ours, g_lit, **TOL)


def test_gradcheck_in_double_precision():
    q, k, v = (t.detach().double().requires_grad_() for t in _qkv(1, 2, 6, 8, 3, seed=2))
    mask = visible_keys(6, 8, torch.device("cpu"))

    def fn(q, k, v):
        gen = torch.Generator().manual_seed(5)  # same draws on every call
        return chunked_attention(q, k, v, mask, False, 0.25, 0.5, block_rows=4, generator=gen)

    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-5)


def test_dropout_keeps_the_expected_share_and_scale():
    q, k, v = _qkv(4, 4, 32, 32, 2, seed=3)
    ones = torch.ones_like(v)
    with torch.no_grad():
        out = chunked_attention(q, k, ones, None, False, 0.4, 1.0, block_rows=8)
    # Each output is sum(weights · kept) / 0.6 with weights summing to 1: its mean is 1.
    assert abs(float(out.mean()) - 1.0) < 0.05


def test_dispatch_uses_the_fused_kernel_unless_cpu_dropout(monkeypatch):
    calls = []
    real = chunked_attention
    monkeypatch.setattr(
        "baselines.mult.attention.chunked_attention",
        lambda *a, **kw: calls.append(a[5]) or real(*a, **kw),
    )
    q, k, v = _qkv(1, 1, 4, 4, 2)
    for p in (0.0, 0.2, 1.0):
        attention(q, k, v, None, True, p, 1.0)
    assert calls == [0.2]


def _dropout_only_config(**kw) -> MulTConfig:
    base = MulTConfig(
        text_dim=7,
        audio_dim=5,
        vision_dim=6,
        out_dim=3,
        d_model=12,
        num_heads=3,
        nlevels=2,
        kernel_a=3,
        kernel_v=2,
        text_dropout=0.0,
        embed_dropout=0.0,
        attn_dropout=0.3,
        attn_dropout_a=0.2,
        attn_dropout_v=0.1,
        relu_dropout=0.0,
        res_dropout=0.0,
        output_dropout=0.0,
    )
    return replace(base, **kw)


def test_mult_training_forward_and_gradients_match_the_literal_attention(monkeypatch):
    """The whole model in training mode: blockwise path == literal maths on the same draws."""
    torch.manual_seed(0)
    model = MulT(_dropout_only_config()).train()
    gen = torch.Generator().manual_seed(1)
    text = torch.randn(3, 10, 7, generator=gen)
    audio = torch.randn(3, 23, 5, generator=gen)
    vision = torch.randn(3, 17, 6, generator=gen)
    params = list(model.parameters())

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(7)
        out = model(text, audio, vision)["M"]
        return out.detach(), _grads(out, params)

    calls = []

    def blockwise(q, k, v, mask, causal, dropout_p, scale):
        calls.append(dropout_p)
        return chunked_attention(q, k, v, mask, causal, dropout_p, scale, block_rows=3)

    def literal(q, k, v, mask, causal, dropout_p, scale):
        kept = None
        if dropout_p > 0:
            shape = (*q.shape[:3], k.shape[2])
            kept = _kept_draws(shape, 3, dropout_p, torch.default_generator)
        return _literal(q, k, v, mask, causal, dropout_p, scale, kept)

    monkeypatch.setattr(mult_model, "attention", blockwise)
    out_ours, grads_ours = run()
    assert calls and all(p > 0 for p in calls)
    monkeypatch.setattr(mult_model, "attention", literal)
    out_lit, grads_lit = run()
    torch.testing.assert_close(out_ours, out_lit, **TOL)
    for g_ours, g_lit in zip(grads_ours, grads_lit, strict=True):
        torch.testing.assert_close(g_ours, g_lit, **TOL)


def test_mult_default_dispatch_matches_fused_path_without_dropout(monkeypatch):
    """With attention dropout off the model's outputs are the fused (previous) path's."""
    torch.manual_seed(0)
    config = _dropout_only_config(attn_dropout=0.0, attn_dropout_a=0.0, attn_dropout_v=0.0)
    model = MulT(config).train()
    gen = torch.Generator().manual_seed(2)
    inputs = (
        torch.randn(2, 9, 7, generator=gen),
        torch.randn(2, 30, 5, generator=gen),
        torch.randn(2, 12, 6, generator=gen),
    )
    ours = model(*inputs)["M"]
    monkeypatch.setattr(mult_model, "attention", fused_attention)
    torch.testing.assert_close(ours, model(*inputs)["M"], **TOL)
