"""Softmax attention restricted to key segments, in one pass and in cache-sized chunks.

For queries q and keys/values split into S equal key segments, ``segment_attention`` returns,
for every query row and every key segment s, the attention output *within* s and its
log-normaliser ``logsumexp_j∈s(q·k_j)``. CIDer's seven attention views are mixtures of these
per-segment outputs (``cider.attention``).

Why a hand-written kernel instead of ``softmax`` + ``logsumexp``: both reductions need the same
per-segment maximum and sum of exponentials, so computing them separately doubles the work on
the largest tensors of the model. Here the score block of a few head-batches is computed, its
per-segment maximum subtracted and exponentiated *in place*, summed once, and multiplied by the
values before the next chunk reuses the same buffer. The chunk is sized so that the block stays
in the CPU's cache, and because the buffer is allocated once per call, the C allocator never has
to map fresh pages for each temporary (score-sized temporaries are hundreds of MB at evaluation
batch sizes, and mapping them dominated the run time).

Training uses the same kernel through an ``autograd.Function`` that saves only q, k, v, the
outputs and the normalisers; its backward pass recomputes the probabilities chunk by chunk
(the approach of memory-efficient attention), so no score-sized tensor is kept between the
forward and backward passes.
"""

from __future__ import annotations

import torch

CPU_CHUNK_BYTES = 1 << 20
"""Size of one chunk's score block on CPU: about one core's L2 cache."""
DEVICE_CHUNK_BYTES = 1 << 28
"""On accelerators the whole batch usually fits in one chunk; this only bounds the peak."""


def chunk_size(head_batches: int, block_elements: int, device: torch.device) -> int:
    """How many head-batches share one score buffer (at least one)."""
    budget = CPU_CHUNK_BYTES if device.type == "cpu" else DEVICE_CHUNK_BYTES
    return max(1, min(head_batches, budget // (4 * block_elements)))


def _scores(q: torch.Tensor, k: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """q (c, R, hd), k (c, K, hd) → out (c, R, K) = q·kᵀ (the same product as plain attention,
    so the scores round exactly as there)."""
    return torch.bmm(q, k.transpose(1, 2), out=out)


def _forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: int
) -> tuple[torch.Tensor, torch.Tensor]:
    head_batches, rows, hd = q.shape
    keys = k.shape[1]
    n = keys // segments
    step = chunk_size(head_batches, rows * keys, q.device)
    # Products are formed as vᵀ·pᵀ (hd × R outputs): BLAS is several times faster with the
    # long axis last than for the R × hd orientation when hd is a handful of channels.
    out_t = q.new_empty(segments, head_batches, hd, rows)
    lse = q.new_empty(head_batches, rows, segments)
    buffer = q.new_empty(step, rows, keys)
    for start in range(0, head_batches, step):
        stop = min(start + step, head_batches)
        c = stop - start
        weights = _scores(q[start:stop], k[start:stop], buffer[:c]).view(c, rows, segments, n)
        peak = weights.amax(dim=-1, keepdim=True)
        weights.sub_(peak).exp_()
        total = weights.sum(dim=-1, keepdim=True)
        weights.div_(total)
        torch.add(peak.squeeze(-1), total.squeeze(-1).log_(), out=lse[start:stop])
        values = v[start:stop]
        for s in range(segments):
            torch.bmm(
                values[:, s * n : (s + 1) * n].transpose(1, 2),
                weights[:, :, s].transpose(1, 2),
                out=out_t[s, start:stop],
            )
    return out_t, lse


def _backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out_t: torch.Tensor,
    lse: torch.Tensor,
    grad_out_t: torch.Tensor,
    grad_lse: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    segments, head_batches, hd, rows = out_t.shape
    keys = k.shape[1]
    n = keys // segments
    # With p the within-segment probabilities, ∂/∂score_ij = p_ij·(dO_is·v_j − dO_is·O_is + dL_is).
    shift = (grad_out_t * out_t).sum(dim=2).permute(1, 2, 0).sub_(grad_lse)  # (BH, R, S)
    dq_t = q.new_empty(head_batches, hd, rows)
    dk_t = q.new_empty(head_batches, hd, keys)
    dv_t = q.new_empty(segments, head_batches, hd, n)
    step = chunk_size(head_batches, rows * keys, q.device)
    probs_buffer = q.new_empty(step, rows, keys)
    grad_buffer = q.new_empty(step, rows, keys)
    # Block-diagonal vᵀ (S·hd × S·n): one product gives dO_s·v_j for every key j of segment s.
    values_bd = q.new_zeros(step, segments, hd, segments, n)
    grad_out_chunk = q.new_empty(step, segments, hd, rows)
    for start in range(0, head_batches, step):
        stop = min(start + step, head_batches)
        c = stop - start
        probs = _scores(q[start:stop], k[start:stop], probs_buffer[:c])
        probs_seg = probs.view(c, rows, segments, n)
        probs_seg.sub_(lse[start:stop].unsqueeze(-1)).exp_()
        go = grad_out_chunk[:c]
        go.copy_(grad_out_t[:, start:stop].transpose(0, 1))
        for s in range(segments):
            torch.bmm(go[:, s], probs_seg[:, :, s], out=dv_t[s, start:stop])
        vbd = values_bd[:c]
        vbd.diagonal(dim1=1, dim2=3).copy_(
            v[start:stop].view(c, segments, n, hd).permute(0, 3, 2, 1)
        )
        grad_scores = grad_buffer[:c]
        torch.bmm(
            go.view(c, segments * hd, rows).transpose(1, 2),
            vbd.view(c, segments * hd, keys),
            out=grad_scores,
        )
        grad_seg = grad_scores.view(c, rows, segments, n)
        grad_seg.sub_(shift[start:stop].unsqueeze(-1)).mul_(probs_seg)
        torch.bmm(k[start:stop].transpose(1, 2), grad_scores.transpose(1, 2), out=dq_t[start:stop])
        torch.bmm(q[start:stop].transpose(1, 2), grad_scores, out=dk_t[start:stop])
    dv = dv_t.permute(1, 0, 3, 2).reshape(head_batches, keys, hd)
    return dq_t.transpose(1, 2), dk_t.transpose(1, 2), dv


class _SegmentAttention(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, q, k, v, segments):  # type: ignore[override]
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out_t, lse = _forward(q, k, v, segments)
        ctx.save_for_backward(q, k, v, out_t, lse)
        return out_t, lse

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_out, grad_lse):  # type: ignore[override]
        q, k, v, out_t, lse = ctx.saved_tensors
        grad_out = torch.zeros_like(out_t) if grad_out is None else grad_out.contiguous()
        grad_lse = torch.zeros_like(lse) if grad_lse is None else grad_lse
        dq, dk, dv = _backward(q, k, v, out_t, lse, grad_out, grad_lse)
        return dq, dk, dv, None


def segment_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segments: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of every query over each key segment separately.

    q (BH, R, hd) already scaled; k, v (BH, S·n, hd) whose keys form ``segments`` consecutive
    segments of n. Returns ``out_t`` (S, BH, hd, R), the softmax-weighted values within each key
    segment (transposed: channels before query rows), and ``lse`` (BH, R, S), each segment's
    log-normaliser. Computed in float32 (also
    under CUDA autocast) and differentiable in q, k and v.
    """
    if k.shape[1] % segments or k.shape != v.shape or q.shape[::2] != k.shape[::2]:
        raise ValueError(
            f"segment_attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
            f"do not fit {segments} key segments"
        )
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if not needs_grad:
        # No graph: skip the Function machinery (and the tensors it would save).
        if q.is_cuda:
            with torch.autocast("cuda", enabled=False):
                return _forward(
                    q.float().contiguous(), k.float().contiguous(), v.float().contiguous(), segments
                )
        return _forward(q.contiguous(), k.contiguous(), v.contiguous(), segments)
    return _SegmentAttention.apply(q, k, v, segments)
