"""The chunked per-segment attention kernel: values, normalisers and gradients."""

from __future__ import annotations

import pytest
import torch

from cider import segment_attention as kernel
from cider.segment_attention import segment_attention


def _naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: int):
    """Per key segment: plain softmax attention and logsumexp, one segment at a time."""
    n = k.shape[1] // segments
    outs, lses = [], []
    for s in range(segments):
        scores = q @ k[:, s * n : (s + 1) * n].transpose(1, 2)
        outs.append(torch.softmax(scores, dim=-1) @ v[:, s * n : (s + 1) * n])
        lses.append(torch.logsumexp(scores, dim=-1))
    # Same layouts as the kernel: (S, BH, hd, R) and (BH, R, S).
    return torch.stack(outs).transpose(2, 3), torch.stack(lses, dim=-1)


@pytest.fixture(params=[1 << 20, 1], ids=["one-chunk", "chunk-per-head-batch"])
def chunk_bytes(request, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(kernel, "CPU_CHUNK_BYTES", request.param)
    return request.param


@pytest.mark.parametrize("segments", [1, 2, 3])
def test_matches_per_segment_softmax(chunk_bytes: int, segments: int) -> None:
    gen = torch.Generator().manual_seed(segments)
    bh, n, hd = 5, 6, 4
    q = torch.randn(bh, 3 * n, hd, generator=gen, dtype=torch.float64) * 3
    k = torch.randn(bh, segments * n, hd, generator=gen, dtype=torch.float64) * 3
    v = torch.randn(bh, segments * n, hd, generator=gen, dtype=torch.float64)
    # Scores far apart across segments: each segment still gets its own normaliser.
    k[:, :n] += 40.0
    out, lse = segment_attention(q, k, v, segments)
    want_out, want_lse = _naive(q, k, v, segments)
    assert torch.allclose(out, want_out, atol=1e-12)
    assert torch.allclose(lse, want_lse, atol=1e-12)


def test_gradients(chunk_bytes: int) -> None:
    gen = torch.Generator().manual_seed(0)
    bh, n, hd = 3, 4, 2
    q, k, v = (
        torch.randn(bh, 3 * n, hd, generator=gen, dtype=torch.float64, requires_grad=True)
        for _ in range(3)
    )
    weights_out = torch.randn(3, bh, hd, 3 * n, generator=gen, dtype=torch.float64)
    weights_lse = torch.randn(bh, 3 * n, 3, generator=gen, dtype=torch.float64)

    def both(q, k, v):
        out, lse = segment_attention(q, k, v, 3)
        return (out * weights_out).sum() + (lse * weights_lse).sum()

    def only_lse(q, k, v):
        return segment_attention(q, k, v, 3)[1].square().sum()

    def only_out(q, k, v):
        return segment_attention(q, k, v, 3)[0].sin().sum()

    for fn in (both, only_lse, only_out):
        assert torch.autograd.gradcheck(fn, (q, k, v)), fn.__name__


def test_float32_gradients_match_autograd_of_the_naive_form() -> None:
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(16, 30, 4, generator=gen, requires_grad=True) for _ in range(3))
    out, lse = segment_attention(q, k, v, 3)
    want_out, want_lse = _naive(q, k, v, 3)
    loss = out.square().sum() + lse.sum()
    want = want_out.square().sum() + want_lse.sum()
    got = torch.autograd.grad(loss, (q, k, v))
    expected = torch.autograd.grad(want, (q, k, v))
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-4)


def test_no_graph_without_grad() -> None:
    q = torch.randn(2, 6, 4, requires_grad=True)
    with torch.no_grad():
        out, lse = segment_attention(q, q.detach(), q.detach(), 3)
    assert out.grad_fn is None and lse.grad_fn is None
    with torch.inference_mode():
        out, _ = segment_attention(q, q, q, 3)
    assert out.is_inference()


def test_rejects_keys_that_do_not_split() -> None:
    q = torch.randn(2, 6, 4)
    with pytest.raises(ValueError, match="key segments"):
        segment_attention(q, torch.randn(2, 7, 4), torch.randn(2, 7, 4), 3)
