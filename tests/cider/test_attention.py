"""Compression attention and the seven-view MMMA (docs/cider.md)."""

from __future__ import annotations

import copy

import pytest
import torch

from cider.attention import VIEW_SEGMENTS, CompressedAttention, MultimodalMultiheadAttention
from cider.model import CIDerModel

from .literal_views import MASK_BLOCKS, additive_mask, literal_forward


def test_compression_rows() -> None:
    torch.manual_seed(0)
    n, length, batch, d = 9, 13, 4, 8
    module = CompressedAttention(d)
    torch.nn.init.normal_(module.in_proj_bias)
    torch.nn.init.normal_(module.out_proj.bias)
    text, other = torch.randn(n, batch, d), torch.randn(length, batch, d)
    text_len = torch.tensor([9, 5, 3, 7])
    text_mask = (torch.arange(n) < text_len[:, None]).long()
    key_len = torch.tensor([13, 4, 1, 8])
    key_mask = (torch.arange(length) < key_len[:, None]).long()
    query_mask = CIDerModel.compress_masks(None, text_mask)  # type: ignore[arg-type]
    assert query_mask[1].tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 0]
    out, _ = module(text, other, query_mask, key_mask)
    w, b = module.in_proj_weight, module.in_proj_bias
    for i in range(batch):
        for t in range(n):
            got = out[t, i]
            if t == 0 or t >= text_len[i] - 1:  # [CLS], [SEP] and padding rows
                assert torch.equal(got, module.out_proj.bias)
                continue
            q = (text[t, i] @ w[:d].T + b[:d]) / d**0.5
            keys = other[: key_len[i], i] @ w[d : 2 * d].T + b[d : 2 * d]
            vals = other[: key_len[i], i] @ w[2 * d :].T + b[2 * d :]
            probs = torch.softmax(keys @ q, dim=0)
            expected = module.out_proj(probs @ vals)
            assert torch.allclose(got, expected, atol=1e-5)


def test_literal_masks_are_complements_of_view_sets() -> None:
    n = 3
    for view in MASK_BLOCKS:
        allowed = torch.zeros(3 * n, dtype=torch.bool)
        for s in VIEW_SEGMENTS[view]:
            allowed[s * n : (s + 1) * n] = True
        expected = torch.where(allowed[:, None] & allowed[None, :], 0.0, -1e9)
        assert torch.equal(additive_mask(view, n), expected)


@pytest.mark.parametrize("heads", [1, 2, 4, 8])
def test_fast_views_equal_literal(heads: int) -> None:
    torch.manual_seed(heads)
    module = MultimodalMultiheadAttention(32, heads).eval()
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(3 * 7, 5, 32) * 2
    fast, scores = module(x)
    slow, slow_scores = literal_forward(module, x)
    assert torch.equal(scores, slow_scores)
    # Outputs reach ~100 here, where float32 rounding alone is ~1e-5: both forms are held to
    # the exact (float64 literal) answer, the fast one no further from it than the literal.
    with torch.no_grad():
        exact, _ = literal_forward(copy.deepcopy(module).double(), x.double())
    fast_err = (fast.double() - exact).abs().max()
    literal_err = (slow.double() - exact).abs().max()
    assert fast_err <= 2 * literal_err + 1e-6, (fast_err, literal_err)
    assert torch.allclose(fast, slow, atol=4e-6 * slow.abs().max().item())
    # Gradients agree too (the training path uses the fast form).
    g_fast = torch.autograd.grad(fast.square().sum(), module.in_proj_weight)[0]
    g_slow = torch.autograd.grad(slow.square().sum(), module.in_proj_weight)[0]
    assert (g_fast - g_slow).abs().max() <= 1e-5 * g_slow.abs().max()


def test_scores_are_scaled_qk_with_head_order_b_h_plus_h() -> None:
    torch.manual_seed(1)
    heads, d, batch, length = 4, 32, 3, 12
    module = MultimodalMultiheadAttention(d, heads)
    torch.nn.init.normal_(module.in_proj_bias)
    x = torch.randn(length, batch, d)
    _, scores = module(x)
    assert scores.shape == (batch * heads, length, length)
    q = x @ module.in_proj_weight[:d].T + module.in_proj_bias[:d]
    k = x @ module.in_proj_weight[d : 2 * d].T + module.in_proj_bias[d : 2 * d]
    hd = d // heads
    for b in range(batch):
        for h in range(heads):
            qh, kh = q[:, b, h * hd : (h + 1) * hd], k[:, b, h * hd : (h + 1) * hd]
            expected = qh @ kh.T / hd**0.5
            assert torch.allclose(scores[b * heads + h], expected, atol=1e-5)


def test_attention_dropout_only_in_lav_view() -> None:
    torch.manual_seed(2)
    module = MultimodalMultiheadAttention(16, 2, attn_dropout=0.5).train()
    x = torch.randn(9, 2, 16)
    a, _ = module(x)
    b, _ = module(x)
    assert not torch.allclose(a, b)  # dropout active in training
    module.eval()
    fast, _ = module(x)
    slow, _ = literal_forward(module, x)
    assert torch.allclose(fast, slow, atol=2e-5)
    # With the dropout RNG replayed, the fast and literal training outputs agree as well.
    module.train()
    torch.manual_seed(3)
    fast, _ = module(x)
    torch.manual_seed(3)
    slow, _ = literal_forward(module, x)
    assert torch.allclose(fast, slow, atol=2e-5)


def test_compression_without_valid_keys_gives_the_bias_rows() -> None:
    # The reference's pair mask zeroes every row of a sample with no valid audio/vision frame.
    torch.manual_seed(4)
    n, length, d = 6, 5, 8
    module = CompressedAttention(d)
    torch.nn.init.normal_(module.out_proj.bias)
    text, other = torch.randn(n, 2, d), torch.randn(length, 2, d)
    query_mask = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0]])
    key_mask = torch.tensor([[0] * length, [1] * length])
    out, _ = module(text, other, query_mask, key_mask)
    assert torch.equal(out[:, 0], module.out_proj.bias.expand(n, d))
    assert not torch.equal(out[1, 1], module.out_proj.bias)
