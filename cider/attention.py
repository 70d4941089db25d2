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

from cider.segment_attention import segment_attention

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

        Returns the compressed sequence (n, B, d) and the probabilities over the valid keys
        (B, n, L); rows of [CLS], [SEP] and padding queries are not used (their output is the
        out_proj bias).
        """
        d = self.embed_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        # Batch-major for the products (a time-major view of batch-major data costs no copy).
        q = F.linear(text.transpose(0, 1), w[:d], b[:d]) * d**-0.5  # (B, n, d)
        k = F.linear(other.transpose(0, 1), w[d : 2 * d], b[d : 2 * d])  # (B, L, d)
        v = F.linear(other.transpose(0, 1), w[2 * d :], b[2 * d :])
        scores = torch.bmm(q, k.transpose(1, 2))  # (B, n, L)
        # The reference adds −1e9 to masked pairs and multiplies the probabilities by the pair
        # mask, so [CLS]/[SEP]/padding query rows come out as out_proj.bias. Filling the
        # masked keys instead gives the same probabilities bit for bit on every kept row (the
        # masked entries' exponentials are exactly 0 either way, the kept scores unchanged), and
        # zeroing a dropped query row after the product instead of before is exact too; that
        # leaves one in-place pass and the softmax over the (B, n, L) block instead of five.
        key_valid = key_mask.bool()
        scores.masked_fill_(~key_valid.unsqueeze(1), -1e9)  # bmm's backward needs no output
        kept_rows = query_mask.to(scores.dtype) * key_valid.any(dim=1, keepdim=True)
        probs = torch.softmax(scores, dim=-1)
        out = torch.bmm(probs, v) * kept_rows.unsqueeze(2)  # (B, n, d)
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
        """views (3 query seg, 4 views, hd, n, B·H): per query segment its four view outputs
        → (3n, B, d): each view through its out_proj, the four concatenated through s_l/s_a/s_v,
        then final_out_proj.

        Worked feature-major, (…, features, n·B), because that is the layout the views arrive
        in: with one head no copy is needed before the products, and the only transposition is
        of the final (3, d, n·B) block (a quarter of the views' size)."""
        hd, n = views.shape[2], views.shape[3]
        d, heads = self.embed_dim, self.num_heads
        # Feature index h·hd + j, as the heads are concatenated (a view when heads == 1).
        rows = (
            views.view(3, 4, hd, n, batch, heads)
            .permute(0, 1, 5, 2, 3, 4)
            .reshape(12, d, n * batch)
        )
        idx = _SEGMENT_VIEW_INDEX.to(views.device)
        w_out = torch.stack([lin.weight for lin in self.out_proj])[idx]  # (3, 4, e, d)
        b_out = torch.stack([lin.bias for lin in self.out_proj])[idx]  # (3, 4, e)
        projected = torch.baddbmm(
            b_out.reshape(12, d, 1), w_out.reshape(12, d, d), rows
        )  # (3·4, e, n·B)
        summ_in = projected.view(3, 4 * d, n * batch)  # the four views' features, in order
        w_s = torch.stack([self.s_l.weight, self.s_a.weight, self.s_v.weight])  # (3, d, 4d)
        b_s = torch.stack([self.s_l.bias, self.s_a.bias, self.s_v.bias])  # (3, d)
        summ = torch.baddbmm(b_s.unsqueeze(2), w_s, summ_in)  # (3, d, n·B)
        out = torch.matmul(self.final_out_proj.weight, summ)  # (3, e, n·B)
        out = out + self.final_out_proj.bias.view(1, d, 1)
        return out.view(3, d, n, batch).permute(0, 2, 3, 1).reshape(3 * n, batch, d)

    @staticmethod
    def mix_views(per_segment: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
        """Per-segment outputs (3 key seg, B·H, hd, 3n) and log-normalisers (B·H, 3n, 3 key seg)
        → the four views of every query row, (3 query seg, 4 views, hd, n, B·H).

        A view's output is Σ_s w_s·out_s with w = softmax of lse_s over the segments it allows:
        weight 1 for a one-segment view, a sigmoid for two, a three-way softmax for LAV. The
        head-batch axis is innermost so that every operation here vectorises.
        """
        bh, hd, length = per_segment.shape[1:]
        n = length // 3
        values = per_segment.permute(0, 2, 3, 1).reshape(3, hd, 3, n, bh)
        logits = lse.permute(2, 1, 0).reshape(3, 3, n, bh)  # (3 key, 3 query, n, BH)
        views = []
        for q, slots in enumerate(SEGMENT_VIEWS):
            out = values[:, :, q]  # (3 key, hd, n, BH)
            for view in slots:
                keys = VIEW_SEGMENTS[view]
                if len(keys) == 1:
                    views.append(out[keys[0]])
                elif len(keys) == 2:
                    a, b = keys
                    w_b = torch.sigmoid(logits[b, q] - logits[a, q])
                    views.append(torch.lerp(out[a], out[b], w_b))
                else:
                    peak = torch.maximum(torch.maximum(logits[0, q], logits[1, q]), logits[2, q])
                    w = (logits[:, q] - peak).exp()
                    mixed = out[0] * w[0] + out[1] * w[1] + out[2] * w[2]
                    views.append(mixed / (w[0] + w[1] + w[2]))
        return torch.stack(views).view(3, 4, hd, n, bh)

    def forward(
        self, x: torch.Tensor, need_scores: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (3n, B, d) → output (3n, B, d) and, when ``need_scores``, the raw scores."""
        length, batch, _ = x.shape
        if length % 3:
            raise ValueError(f"MMMA input length {length} is not 3·n")
        n = length // 3
        q, k, v = self.project(x)
        hd = self.head_dim
        dropout = self.training and self.attn_dropout > 0.0
        scores = torch.bmm(q, k.transpose(1, 2)) if need_scores or dropout else None

        # Softmax inside each (query row, key segment) block and its log-normaliser, one pass.
        per_segment, lse = segment_attention(q, k, v, 3)  # (3 key seg, BH, hd, 3n), (BH, 3n, 3)
        # Each view mixes the segments it allows with weights softmax(lse) over those segments.
        views = self.mix_views(per_segment, lse)  # (3 query seg, 4 views, hd, n, B·H)

        if dropout:
            assert scores is not None
            # Dropout on the probabilities exists only in the LAV view; it needs the
            # full matrix, so only then is it materialised.
            full = F.dropout(torch.softmax(scores, dim=-1), p=self.attn_dropout, training=True)
            lav = torch.bmm(full, v).view(-1, 3, n, hd).permute(1, 3, 2, 0)  # (3, hd, n, BH)
            views = torch.cat((lav.unsqueeze(1).to(views.dtype), views[:, 1:]), dim=1)
        return self.summarise(views.to(x.dtype), batch), scores if need_scores else None
