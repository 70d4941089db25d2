"""Scaled dot-product attention for MulT that never keeps a float score tensor for backward.

``F.scaled_dot_product_attention`` already runs a fused, memory-efficient kernel whenever
attention dropout is off, and on CUDA also with dropout. On CPU with dropout it falls back to the
plain maths: the (B, H, Tq, Tk) scores, softmax, dropout mask and dropped weights are all kept
for backward. At MOSI's unaligned lengths (375 × 500 frames) that is several hundred MB per
sample, and most of the step time goes into moving those tensors.

:func:`attention` dispatches: the fused kernel where it is memory-efficient, otherwise
:class:`_ChunkedDropoutAttention`, a flash-attention-style autograd function written in PyTorch.
It walks over blocks of query rows, keeps only which weights dropout kept (one byte per weight)
for backward, and recomputes each block's softmax there. The maths is the fused path's:
softmax(q kᵀ · scale + mask), inverted dropout on the weights, then the product with v.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_ELEMENTS = 1 << 20
"""Attention weights held per query block (B · H · rows · Tk): about 4 MB in float32."""


def fused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    dropout_p: float,
    scale: float,
) -> torch.Tensor:
    """PyTorch's ``scaled_dot_product_attention`` (``mask``: bool, True = visible)."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal, scale=scale
    )


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    dropout_p: float,
    scale: float,
) -> torch.Tensor:
    """(B, H, Tq, D) queries, (B, H, Tk, D) keys/values → (B, H, Tq, D).

    ``mask`` (Tq, Tk) bool, True = visible; ``causal`` hides keys after the query (Tq == Tk);
    ``dropout_p`` applies to the attention weights (pass 0 outside training).
    """
    if 0.0 < dropout_p < 1.0 and q.device.type == "cpu":
        return chunked_attention(q, k, v, mask, causal, dropout_p, scale)
    return fused_attention(q, k, v, mask, causal, dropout_p, scale)


def chunked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    dropout_p: float,
    scale: float,
    *,
    block_rows: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Blockwise attention with dropout; keeps O(B·H·Tq·Tk) bytes, not floats, for backward.

    ``block_rows`` (default: about :data:`CHUNK_ELEMENTS` weights per block) and ``generator``
    (default: the global RNG) exist for tests. With ``block_rows >= Tq`` the kept weights are
    one draw ``torch.rand(B, H, Tq, Tk, generator=generator) >= dropout_p``.
    """
    b, h, tq, _ = q.shape
    tk = k.shape[2]
    if block_rows is None:
        block_rows = max(1, CHUNK_ELEMENTS // max(1, b * h * tk))
    bias = None
    if causal:
        mask = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        # An additive bias broadcast into one baddbmm is cheaper than a masked_fill per block.
        bias = torch.zeros(tq, tk, dtype=q.dtype, device=q.device)
        bias.masked_fill_(~mask, float("-inf"))
    out = _ChunkedDropoutAttention.apply(
        q.reshape(b * h, tq, -1),
        k.reshape(b * h, tk, -1),
        v.reshape(b * h, tk, -1),
        bias,
        float(dropout_p),
        float(scale),
        int(block_rows),
        generator,
    )
    return out.view(b, h, tq, -1)


def _row_blocks(tq: int, block_rows: int) -> list[slice]:
    """The query rows of each block, in order; forward and backward walk the same blocks."""
    return [slice(lo, min(lo + block_rows, tq)) for lo in range(0, tq, block_rows)]


def _block_weights(
    q_block: torch.Tensor, k_t: torch.Tensor, bias: torch.Tensor | None, rows: slice
) -> torch.Tensor:
    """softmax(q kᵀ + bias) of one block of (already scaled) queries: (B·H, rows, Tk)."""
    if bias is None:
        scores = torch.bmm(q_block, k_t)
    else:
        scores = torch.baddbmm(bias[rows], q_block, k_t)
    return torch.softmax(scores, dim=-1)


class _ChunkedDropoutAttention(torch.autograd.Function):
    """q, k, v as (B·H, T, D); the weights of each query block are recomputed in backward."""

    @staticmethod
    def forward(
        ctx,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None,
        dropout_p: float,
        scale: float,
        block_rows: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        tq = q.shape[1]
        q_scaled = q * scale
        k_t = k.transpose(1, 2)
        inv_keep = 1.0 / (1.0 - dropout_p)
        out = q.new_empty(q.shape[0], tq, v.shape[-1])
        kept_blocks = []
        for rows in _row_blocks(tq, block_rows):
            p = _block_weights(q_scaled[:, rows], k_t, bias, rows)
            # Each weight kept with probability 1 - dropout_p and scaled by 1/(1 - dropout_p),
            # as F.dropout does; the scale is applied to the (rows, D) product, not the weights.
            kept = torch.rand(p.shape, generator=generator, device=p.device) >= dropout_p
            out[:, rows] = torch.bmm(p.mul_(kept), v).mul_(inv_keep)
            kept_blocks.append(kept)
        ctx.save_for_backward(q_scaled, k, v, out, bias)
        ctx.kept_blocks = kept_blocks
        ctx.scale, ctx.inv_keep, ctx.block_rows = scale, inv_keep, block_rows
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        q_scaled, k, v, out, bias = ctx.saved_tensors
        inv_keep, block_rows = ctx.inv_keep, ctx.block_rows
        tq = q_scaled.shape[1]
        k_t, v_t = k.transpose(1, 2), v.transpose(1, 2)
        grad_out = grad_out.contiguous()
        # Row sums of dP ∘ P equal those of dO ∘ O (dropout included), as in flash attention.
        delta = (grad_out * out).sum(dim=-1, keepdim=True)
        dq = torch.empty_like(q_scaled)
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)
        for rows, kept in zip(_row_blocks(tq, block_rows), ctx.kept_blocks, strict=True):
            q_block, go = q_scaled[:, rows], grad_out[:, rows]
            p = _block_weights(q_block, k_t, bias, rows)
            dv.baddbmm_((p * kept).transpose(1, 2), go)
            dp = torch.bmm(go, v_t).mul_(kept).mul_(inv_keep)
            ds = dp.sub_(delta[:, rows]).mul_(p)
            dq[:, rows] = torch.bmm(ds, k)
            dk.baddbmm_(ds.transpose(1, 2), q_block)
        dv.mul_(inv_keep)
        dq.mul_(ctx.scale)
        return dq, dk, dv, None, None, None, None, None
