"""CIDer's two attention modules (docs/cider.md).

``CompressedAttention`` shortens an unaligned audio/vision sequence to the text length with one
text-queried head. ``MultimodalMultiheadAttention`` (MMMA) is the self-attention of the
multimodal transformer over the concatenated [L; A; V] sequence with seven attention "views".

The reference computes each restricted view from its own clone of the 3n×3n score matrix with
−1e9 masks, value masking and a post-softmax query-row mask. On every row that is consumed
downstream, a restricted view equals attention whose keys are limited to the view's segment set,
so this implementation computes, once per layer, a softmax *within* each key segment
and its log-normaliser, and then mixes the three per-segment outputs with weights
``softmax(logsumexp_s)`` over the segments a view allows. That is exact algebra (no
approximation) and costs one attention instead of seven. The literal form lives in
``tests/cider/literal_views.py`` and the tests compare the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# View index → allowed key segments (0 = L, 1 = A, 2 = V); the out_proj index is the view index.
VIEW_SEGMENTS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2),  # LAV
    (0, 1),  # LA
    (0, 2),  # LV
    (1, 2),  # AV
    (0,),  # L
    (1,),  # A
    (2,),  # V
)
VIEW_NAMES: tuple[str, ...] = ("LAV", "LA", "LV", "AV", "L", "A", "V")
# Per query segment, the four views its summariser (s_l / s_a / s_v) concatenates, in order.
SEGMENT_VIEWS: tuple[tuple[int, int, int, int], ...] = (
    (0, 1, 2, 4),  # text rows: LAV, LA, LV, L
    (0, 1, 3, 5),  # audio rows: LAV, LA, AV, A
    (0, 2, 3, 6),  # vision rows: LAV, LV, AV, V
)


def _view_key_bias() -> torch.Tensor:
    """(3 query segments, 4 views, 3 key segments): 0 where the view allows the key segment,
    −inf elsewhere (added to the per-segment log-normalisers)."""
    bias = torch.full((3, 4, 3), float("-inf"))
    for q, views in enumerate(SEGMENT_VIEWS):
        for slot, view in enumerate(views):
            for s in VIEW_SEGMENTS[view]:
                bias[q, slot, s] = 0.0
    return bias


_VIEW_KEY_BIAS = _view_key_bias()
_SEGMENT_VIEW_INDEX = torch.tensor(SEGMENT_VIEWS, dtype=torch.int64)


class CompressedAttention(nn.Module):
    """One-head text-queried attention that maps an A/V sequence to the text length.

    Parameter names match ``torch.nn.MultiheadAttention`` (``in_proj_weight``, ``in_proj_bias``,
    ``out_proj``) as in the reference state dict.
    """

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        text: torch.Tensor,
        other: torch.Tensor,
        query_mask: torch.Tensor,
        key_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """text (n, B, d), other (L, B, d) time-major; query_mask (B, n), key_mask (B, L) in {0,1}.

        Returns the compressed sequence (n, B, d) and the masked probabilities (B, n, L).
        """
        d = self.embed_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        q = F.linear(text, w[:d], b[:d]) * d**-0.5
        k = F.linear(other, w[d : 2 * d], b[d : 2 * d])
        v = F.linear(other, w[2 * d :], b[2 * d :])
        scores = torch.bmm(q.transpose(0, 1), k.permute(1, 2, 0))  # (B, n, L)
        pair = query_mask.to(scores.dtype).unsqueeze(2) * key_mask.to(scores.dtype).unsqueeze(1)
        # The reference *adds* −1e9 (not assigns) and re-multiplies by the pair mask after the
        # softmax, so [CLS]/[SEP]/padding query rows come out as out_proj.bias.
        probs = torch.softmax(scores + (pair - 1.0) * 1e9, dim=-1) * pair
        out = torch.bmm(probs, v.transpose(0, 1))  # (B, n, d)
        return self.out_proj(out.transpose(0, 1)), probs


class MultimodalMultiheadAttention(nn.Module):
    """The seven-view multimodal self-attention of one MCT layer.

    Input (3n, B, d) with segments L = [0, n), A = [n, 2n), V = [2n, 3n). Returns the output
    (3n, B, d) and the raw scaled scores Q·Kᵀ (B·H, 3n, 3n), head-batch index b·H + h, which the
    reference returns unmasked (Q-14).
    """

    def __init__(self, embed_dim: int, num_heads: int, attn_dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide embed_dim {embed_dim}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.attn_dropout = attn_dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.final_out_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.ModuleList(nn.Linear(embed_dim, embed_dim) for _ in VIEW_SEGMENTS)
        self.s_l = nn.Linear(4 * embed_dim, embed_dim)
        self.s_a = nn.Linear(4 * embed_dim, embed_dim)
        self.s_v = nn.Linear(4 * embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        for lin in self.out_proj:
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scaled queries, keys and values as (B·H, 3n, head_dim), head-batch index b·H + h."""
        length, batch, _ = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q = q * self.head_dim**-0.5

        def heads(t: torch.Tensor) -> torch.Tensor:
            return (
                t.contiguous().view(length, batch * self.num_heads, self.head_dim).transpose(0, 1)
            )

        return heads(q), heads(k), heads(v)

    def summarise(self, views: torch.Tensor, batch: int) -> torch.Tensor:
        """views (B·H, 3, n, 4, hd): per query segment its four view outputs → (3n, B, d)."""
        _, _, n, _, hd = views.shape
        merged = (
            views.view(batch, self.num_heads, 3, n, 4, hd)
            .permute(2, 3, 0, 4, 1, 5)
            .reshape(3, n, batch, 4, self.embed_dim)
        )
        idx = _SEGMENT_VIEW_INDEX.to(merged.device)
        w_out = torch.stack([lin.weight for lin in self.out_proj])[idx]  # (3, 4, d, d)
        b_out = torch.stack([lin.bias for lin in self.out_proj])[idx]  # (3, 4, d)
        projected = torch.einsum("qnbvd,qved->qnbve", merged, w_out) + b_out[:, None, None]
        summ_in = projected.reshape(3, n, batch, 4 * self.embed_dim)
        w_s = torch.stack([self.s_l.weight, self.s_a.weight, self.s_v.weight])  # (3, d, 4d)
        b_s = torch.stack([self.s_l.bias, self.s_a.bias, self.s_v.bias])  # (3, d)
        summ = torch.einsum("qnbk,qek->qnbe", summ_in, w_s) + b_s[:, None, None]
        return self.final_out_proj(summ.reshape(3 * n, batch, self.embed_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length, batch, _ = x.shape
        if length % 3:
            raise ValueError(f"MMMA input length {length} is not 3·n")
        n = length // 3
        q, k, v = self.project(x)
        bh, hd = q.shape[0], self.head_dim
        scores = torch.bmm(q, k.transpose(1, 2))  # (BH, 3n, 3n)

        # Softmax inside each (query row, key segment) block and its log-normaliser.
        blocks = scores.view(bh, length, 3, n)
        lse = torch.logsumexp(blocks, dim=-1)  # (BH, 3n, 3)
        probs = torch.softmax(blocks, dim=-1).transpose(1, 2)  # (BH, 3 key seg, 3n, n)
        per_segment = torch.matmul(probs, v.view(bh, 3, n, hd))  # (BH, 3 key seg, 3n, hd)
        per_segment = per_segment.transpose(1, 2).reshape(bh, 3, n, 3, hd)

        # Each view mixes the segments it allows with weights softmax(lse) over those segments.
        mix = lse.view(bh, 3, n, 1, 3) + _VIEW_KEY_BIAS.to(lse.device, lse.dtype)[None, :, None]
        views = torch.matmul(torch.softmax(mix, dim=-1), per_segment)  # (BH, 3, n, 4, hd)

        if self.training and self.attn_dropout > 0.0:
            # Dropout on the probabilities exists only in the LAV view; it needs the
            # full matrix, so only then is it materialised.
            full = F.dropout(torch.softmax(scores, dim=-1), p=self.attn_dropout, training=True)
            lav = torch.bmm(full, v).view(bh, 3, n, 1, hd)
            views = torch.cat((lav, views[..., 1:, :]), dim=3)
        return self.summarise(views, batch), scores
