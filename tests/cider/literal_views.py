"""The literal seven-view MMMA of the reference (docs/cider.md): the parity oracle.

Each restricted view clones the 3n×3n scores, adds an additive mask written as the reference's
union of −1e9 blocks (assigned, not summed), zeroes the values outside the view, takes a float32
softmax and multiplies the probabilities by the query-row mask. Deliberately unoptimised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cider.attention import MultimodalMultiheadAttention

L, A, V = 0, 1, 2
ALL = (L, A, V)
# view index → list of (query segments, key segments) blocks set to −1e9, as the spec's table.
MASK_BLOCKS: dict[int, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {
    1: [((L, A), (V,)), ((V,), ALL)],  # LA
    2: [((L,), (A,)), ((A,), ALL), ((V,), (A,))],  # LV
    3: [((L,), ALL), ((A, V), (L,))],  # AV
    4: [((L,), (A, V)), ((A, V), ALL)],  # L
    5: [((L,), ALL), ((A,), (L,)), ((A,), (V,)), ((V,), ALL)],  # A
    6: [((L, A), ALL), ((V,), (L, A))],  # V
}
VIEW_SETS = {0: ALL, 1: (L, A), 2: (L, V), 3: (A, V), 4: (L,), 5: (A,), 6: (V,)}


def additive_mask(view: int, n: int) -> torch.Tensor:
    """(3n, 3n) additive mask of a restricted view: 0, or exactly −1e9 (assigned)."""
    mask = torch.zeros(3 * n, 3 * n)
    for rows, cols in MASK_BLOCKS[view]:
        for r in rows:
            for c in cols:
                mask[r * n : (r + 1) * n, c * n : (c + 1) * n] = -1e9
    return mask


def position_mask(view: int, n: int) -> torch.Tensor:
    """(3n,) 1 where the position lies in a segment of the view."""
    m = torch.zeros(3 * n)
    for s in VIEW_SETS[view]:
        m[s * n : (s + 1) * n] = 1.0
    return m


def literal_forward(
    self: MultimodalMultiheadAttention, x: torch.Tensor, need_scores: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop-in replacement for ``MultimodalMultiheadAttention.forward`` (always returns the
    scores: ``need_scores`` is accepted for the signature only)."""
    length, batch, d = x.shape
    n = length // 3
    q, k, v = self.project(x)
    scores = torch.bmm(q, k.transpose(1, 2))
    outputs = []
    for view in range(7):
        s = scores.clone()
        if view == 0:
            probs = F.dropout(torch.softmax(s, dim=-1), p=self.attn_dropout, training=self.training)
            out = torch.bmm(probs, v)
        else:
            pos = position_mask(view, n).to(x.device)
            pos_bh = pos.unsqueeze(0).expand(s.shape[0], -1)  # per (head-batch, position)
            v_view = v * pos_bh.unsqueeze(-1)
            # The reference's explicit float32 softmax (promoted, so a float64 run stays float64).
            dtype = torch.promote_types(s.dtype, torch.float32)
            probs = torch.softmax((s + additive_mask(view, n).to(x.device)).to(dtype), dim=-1)
            probs = probs * pos_bh.unsqueeze(-1)
            out = torch.bmm(probs, v_view)
        out = out.transpose(0, 1).contiguous().view(length, batch, d)
        outputs.append(self.out_proj[view](out))
    seg = [slice(0, n), slice(n, 2 * n), slice(2 * n, 3 * n)]
    o = outputs
    text = self.s_l(torch.cat([o[0][seg[0]], o[1][seg[0]], o[2][seg[0]], o[4][seg[0]]], -1))
    audio = self.s_a(torch.cat([o[0][seg[1]], o[1][seg[1]], o[3][seg[1]], o[5][seg[1]]], -1))
    vision = self.s_v(torch.cat([o[0][seg[2]], o[2][seg[2]], o[3][seg[2]], o[6][seg[2]]], -1))
    return self.final_out_proj(torch.cat([text, audio, vision], dim=0)), scores
