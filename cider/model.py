"""The CIDer network (docs/cider.md), state-dict compatible with the reference.

Attribute names, registration order, shapes and parameter/buffer kinds reproduce the
reference ``CIDERModel`` exactly, so its converted checkpoints load with ``strict=True``
(BERT under ``text_model.model.``).

Two numerical switches distinguish the registered variants (``cider.adapter``):

- ``positions_by_time``: False reproduces Q-5 (the sinusoid is indexed by the sample's position
  in the mini-batch, pe[b] added to every step of sample b); True indexes it by time step.
- ``log_floor``: None reproduces Q-18 (log of the class mixture with no epsilon); a float clamps
  the mixture from below before the log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cider.attention import CompressedAttention, MultimodalMultiheadAttention
from mer_bench.text_encoder import TextModel

MAX_POSITIONS = 1024


@dataclass(frozen=True)
class CIDerConfig:
    """Everything that fixes the module's shapes and numerics."""

    text_dim: int
    """D_l: hidden size of the text encoder (768 for BERT-base)."""
    audio_dim: int
    vision_dim: int
    text_len: int
    """n: text length; also the MCT segment length (Q-20)."""
    audio_len: int
    """L_a: stored audio length (= n when aligned)."""
    vision_len: int
    num_classes: int
    aligned: bool
    cross_dataset: bool = False
    """Cross-dataset prototype encoders carry parameter-free LayerNorms (keys 0/3/6, Q-17)."""
    embed_dim: int = 32
    num_layers: int = 3
    num_heads: int = 8
    attn_dropout: float = 0.0
    embed_dropout: float = 0.2
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    out_dropout: float = 0.30000000000000004
    positions_by_time: bool = False
    log_floor: float | None = None

    @property
    def proto_dim(self) -> int:
        return self.text_dim + self.audio_dim + self.vision_dim


@dataclass
class CIDerOutput:
    """One pass of the shared body on one view."""

    pred: torch.Tensor
    """(B, C) log class probabilities."""
    joint_rep: torch.Tensor
    """(B, 3d)."""
    attn: torch.Tensor
    """(B·H, 3n, 3n) raw scores of the last MCT layer (empty when not asked for)."""
    text_hidden: torch.Tensor
    """(B, n, D_l) text-encoder output of this view (the reconstruction target when complete)."""
    text_recon: torch.Tensor | None = None
    audio_recon: torch.Tensor | None = None
    vision_recon: torch.Tensor | None = None


class SinusoidalPositions(nn.Module):
    """Fixed sinusoid table ``pe`` (1, 1024, d)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        position = torch.arange(MAX_POSITIONS, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(
            torch.arange(0, embed_dim, 2, dtype=torch.float32) * (-math.log(10000.0) / embed_dim)
        )
        pe = torch.zeros(MAX_POSITIONS, embed_dim)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)[:, : embed_dim // 2]
        self.register_buffer("pe", pe.unsqueeze(0))


class EncoderLayer(nn.Module):
    """Pre-norm MCT layer: MMMA then FFN, each with a residual."""

    def __init__(self, cfg: CIDerConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.self_attn = MultimodalMultiheadAttention(d, cfg.num_heads, cfg.attn_dropout)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.layer_norms = nn.ModuleList([nn.LayerNorm(d), nn.LayerNorm(d)])
        for lin in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.relu_dropout = cfg.relu_dropout
        self.res_dropout = cfg.res_dropout

    def forward(
        self, x: torch.Tensor, need_scores: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, scores = self.self_attn(self.layer_norms[0](x), need_scores=need_scores)
        x = x + F.dropout(attended, self.res_dropout, self.training)
        hidden = F.dropout(
            F.relu(self.fc1(self.layer_norms[1](x)), inplace=True),
            self.relu_dropout,
            self.training,
        )
        x = x + F.dropout(self.fc2(hidden), self.res_dropout, self.training)
        return x, scores


class MultimodalTransformer(nn.Module):
    """The MCT: positions, Lyr pre-norm layers, final LayerNorm."""

    def __init__(self, cfg: CIDerConfig) -> None:
        super().__init__()
        self.register_buffer("version", torch.tensor([2.0]))
        self.embed_positions = SinusoidalPositions(cfg.embed_dim)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_layers))
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.embed_dropout = cfg.embed_dropout
        self.positions_by_time = cfg.positions_by_time

    def positions(self, length: int, batch: int, pe_index: torch.Tensor | None) -> torch.Tensor:
        """The positional term broadcastable to (3n, B, d)."""
        pe = self.embed_positions.pe[0]
        if self.positions_by_time:
            return pe[:length].unsqueeze(1)
        # Q-5 (must reproduce): the reference slices the table by the *batch* axis of its
        # time-major input, so sample b gets pe[b] at every time step.
        if pe_index is None:
            if batch > MAX_POSITIONS:
                raise ValueError(f"batch size {batch} exceeds the {MAX_POSITIONS}-row table (Q-5)")
            return pe[:batch].unsqueeze(0)
        return pe[pe_index].unsqueeze(0)

    def forward(
        self, x: torch.Tensor, pe_index: torch.Tensor | None = None, need_scores: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the output and the last layer's raw scores (empty unless ``need_scores``)."""
        x = x + self.positions(x.shape[0], x.shape[1], pe_index)
        x = F.dropout(x, self.embed_dropout, self.training)
        scores: torch.Tensor | None = None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            # Only the last layer's scores leave the transformer; the others are never formed.
            x, scores = layer(x, need_scores=need_scores and i == last)
        if scores is None or not need_scores:
            scores = x.new_empty(0)
        return self.layer_norm(x), scores


class AttentionPooling(nn.Module):
    """Unmasked additive attention pooling over time (Q-13)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.Linear(embed_dim, embed_dim), nn.Tanh(), nn.Linear(embed_dim, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, n, d) → (B, d)."""
        weights = torch.softmax(self.attention(x), dim=1)
        return (weights * x).sum(dim=1)


def _prototype_encoder(in_dim: int, d: int, cross: bool) -> nn.Sequential:
    if cross:
        # Parameter-free LayerNorms shift the Linear indices to 0/3/6.
        return nn.Sequential(
            nn.Linear(in_dim, d),
            nn.LayerNorm(d, elementwise_affine=False),
            nn.ReLU(),
            nn.Linear(d, d),
            nn.LayerNorm(d, elementwise_affine=False),
            nn.ReLU(),
            nn.Linear(d, d),
        )
    return nn.Sequential(
        nn.Linear(in_dim, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d)
    )


def gru_group(
    grus: tuple[nn.GRU, ...], inputs: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    """Several one-layer GRUs (time-major, zero initial state) over inputs of one shape (T, B, d),
    run as one recurrence: the input gates of every step in one product, then per step one
    batched product for all GRUs. Inference only (no graph is built); equal to running each
    ``nn.GRU`` alone up to float rounding. The three modality GRUs are short and narrow, so
    per-step dispatch, not arithmetic, is what they cost: this runs T steps instead of 3T."""
    length, batch, _ = inputs[0].shape
    hidden = grus[0].hidden_size
    x = torch.stack(inputs)  # (G, T, B, d)
    groups = x.shape[0]
    w_ih = torch.stack([g.weight_ih_l0 for g in grus])  # (G, 3H, d)
    w_hh = torch.stack([g.weight_hh_l0 for g in grus]).transpose(1, 2)  # (G, H, 3H)
    b_ih = torch.stack([g.bias_ih_l0 for g in grus]).unsqueeze(1)
    b_hh = torch.stack([g.bias_hh_l0 for g in grus]).unsqueeze(1)
    gates_x = torch.baddbmm(b_ih, x.view(groups, length * batch, -1), w_ih.transpose(1, 2))
    gates_x = gates_x.view(groups, length, batch, 3 * hidden)
    out = x.new_empty(groups, length, batch, hidden)
    h = x.new_zeros(groups, batch, hidden)
    for t in range(length):
        gates_h = torch.baddbmm(b_hh, h, w_hh)  # (G, B, 3H)
        gx = gates_x[:, t]
        rz = torch.sigmoid(gx[..., : 2 * hidden] + gates_h[..., : 2 * hidden])
        r, z = rz[..., :hidden], rz[..., hidden:]
        n = torch.tanh(gx[..., 2 * hidden :] + r * gates_h[..., 2 * hidden :])
        h = torch.addcmul(n, z, h - n)  # (1 − z)·n + z·h
        out[:, t] = h
    return tuple(out.unbind(0))


class CIDerModel(nn.Module):
    """CIDer's network. ``forward`` is one pass of the reference's shared body on one view."""

    def __init__(self, cfg: CIDerConfig, text_encoder: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        d, n = cfg.embed_dim, cfg.text_len
        self.text_model = TextModel(text_encoder)
        if self.text_model.hidden_size != cfg.text_dim:
            raise ValueError(
                f"text encoder hidden size {self.text_model.hidden_size} != text_dim {cfg.text_dim}"
            )
        self.proj_l = nn.Conv1d(cfg.text_dim, d, kernel_size=1, bias=False)
        self.proj_a = nn.Conv1d(cfg.audio_dim, d, kernel_size=1, bias=False)
        self.proj_v = nn.Conv1d(cfg.vision_dim, d, kernel_size=1, bias=False)
        # Present (and saved) even when aligned, where they are never used.
        self.a_compress = CompressedAttention(d)
        self.v_compress = CompressedAttention(d)
        self.t = nn.GRU(d, d)
        self.a = nn.GRU(d, d)
        self.v = nn.GRU(d, d)
        self.multimodal_transformer = MultimodalTransformer(cfg)
        self.attn_l = AttentionPooling(d)
        self.attn_a = AttentionPooling(d)
        self.attn_v = AttentionPooling(d)
        self.recon_text = nn.Linear(d, cfg.text_dim)
        self.recon_audio = nn.ModuleList([nn.Linear(n, cfg.audio_len), nn.Linear(d, cfg.audio_dim)])
        self.recon_vision = nn.ModuleList(
            [nn.Linear(n, cfg.vision_len), nn.Linear(d, cfg.vision_dim)]
        )
        self.proj1 = nn.Linear(3 * d, 3 * d)
        self.proj2 = nn.Linear(3 * d, 3 * d)
        self.cls_encoders_l = _prototype_encoder(cfg.text_dim, d, cross=False)
        self.cls_encoders_a = _prototype_encoder(cfg.audio_dim, d, cross=cfg.cross_dataset)
        self.cls_encoders_v = _prototype_encoder(cfg.vision_dim, d, cross=cfg.cross_dataset)
        self.classifiers = nn.ModuleList(
            nn.Linear(6 * d, cfg.num_classes) for _ in range(cfg.num_classes)
        )

    # ------------------------------------------------------------------ pieces
    def encode_prototypes(self, prototypes: torch.Tensor) -> torch.Tensor:
        """(C, D) prototypes → (C, 3d) [e^l; e^a; e^v]."""
        dl, da = self.cfg.text_dim, self.cfg.audio_dim
        return torch.cat(
            (
                self.cls_encoders_l(prototypes[:, :dl]),
                self.cls_encoders_a(prototypes[:, dl : dl + da]),
                self.cls_encoders_v(prototypes[:, dl + da :]),
            ),
            dim=-1,
        )

    def causal_head(
        self, joint_rep: torch.Tensor, prototypes: torch.Tensor, prior: torch.Tensor
    ) -> torch.Tensor:
        """Backdoor adjustment: log Σ_i π_i softmax(classifier_i([r; e_i])).

        prototypes (C, D) are shared by the batch (the reference repeats them per sample, with
        no numerical difference); prior is (C,) or (B, C).
        """
        batch, c = joint_rep.shape[0], self.cfg.num_classes
        encoded = self.encode_prototypes(prototypes)  # (C, 3d)
        z = torch.cat(
            (
                joint_rep.unsqueeze(1).expand(batch, c, -1),
                encoded.unsqueeze(0).expand(batch, -1, -1),
            ),
            dim=-1,
        )  # (B, C strata, 6d)
        weight = torch.stack([clf.weight for clf in self.classifiers])  # (C strata, C, 6d)
        bias = torch.stack([clf.bias for clf in self.classifiers])  # (C strata, C)
        per_stratum = torch.softmax(torch.einsum("bik,iok->bio", z, weight) + bias, dim=-1)
        mixture = (prior.reshape(-1, c, 1) * per_stratum).sum(dim=1)  # (B, C)
        if self.cfg.log_floor is not None:
            mixture = mixture.clamp_min(self.cfg.log_floor)
        # the reference takes the log with no epsilon.
        return torch.log(mixture)

    def compress_masks(self, text_mask: torch.Tensor) -> torch.Tensor:
        """Query-row mask of the compression attention: text mask without [CLS] and [SEP]."""
        q = text_mask.clone()
        last = (text_mask.sum(dim=1) - 1).clamp_min(0)
        q.scatter_(1, last.unsqueeze(1).long(), 0)
        q[:, 0] = 0
        return q

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        text_segments: torch.Tensor,
        audio: torch.Tensor,
        vision: torch.Tensor,
        audio_mask: torch.Tensor,
        vision_mask: torch.Tensor,
        prototypes: torch.Tensor,
        prior: torch.Tensor,
        reconstruct: bool = False,
        pe_index: torch.Tensor | None = None,
        need_attention: bool = True,
        text_views: int = 1,
    ) -> CIDerOutput:
        """One view through the body. Masks are always the *original* validity masks (Q-11).

        ``pe_index`` (B,) overrides the batch position used by the Q-5 positional term (lets a
        caller run two views of the same samples as one concatenated batch).
        ``need_attention=False`` skips forming the last layer's raw scores (``attn`` is then
        empty): evaluation never reads them, and they are the largest tensor of the pass.
        ``text_views`` = k means the text inputs hold k views of the same B samples stacked
        along the batch (k·B rows) while audio/vision hold the B samples once: their
        projections, which do not read the text, run once and are shared by every text view; the
        numbers are those of repeating the audio/vision rows k times. Without a graph the three
        GRUs run as one grouped recurrence (``gru_group``).
        """
        cfg = self.cfg
        n = cfg.text_len
        if text_ids.shape[0] != text_views * audio.shape[0]:
            raise ValueError(
                f"{text_ids.shape[0]} text rows for {audio.shape[0]} audio rows × {text_views} views"
            )
        text_hidden = self.text_model(text_ids, text_mask, text_segments)  # (kB, n, D_l)
        # The bias-free kernel-1 convolutions are per-step linear maps; applied as matrix
        # products on the batch-major inputs, viewed time-major (n, B, d) without a copy.
        p_l = F.linear(text_hidden, self.proj_l.weight.squeeze(-1)).transpose(0, 1)
        p_a = F.linear(audio, self.proj_a.weight.squeeze(-1)).transpose(0, 1)
        p_v = F.linear(vision, self.proj_v.weight.squeeze(-1)).transpose(0, 1)
        if not cfg.aligned:
            # Compression is queried by the text, so it runs per text view.
            query_mask = self.compress_masks(text_mask)
            p_a, _ = self.a_compress(
                p_l, p_a.repeat(1, text_views, 1), query_mask, audio_mask.repeat(text_views, 1)
            )
            p_v, _ = self.v_compress(
                p_l, p_v.repeat(1, text_views, 1), query_mask, vision_mask.repeat(text_views, 1)
            )
        if cfg.aligned and text_views > 1:
            p_a, p_v = p_a.repeat(1, text_views, 1), p_v.repeat(1, text_views, 1)
        if torch.is_grad_enabled():
            h_l, _ = self.t(p_l)
            h_a, _ = self.a(p_a)
            h_v, _ = self.v(p_v)
        else:
            h_l, h_a, h_v = gru_group((self.t, self.a, self.v), (p_l, p_a, p_v))
        z, scores = self.multimodal_transformer(
            torch.cat((h_l, h_a, h_v), dim=0), pe_index, need_scores=need_attention
        )
        z_l, z_a, z_v = (
            z[:n].transpose(0, 1),
            z[n : 2 * n].transpose(0, 1),
            z[2 * n :].transpose(0, 1),
        )
        pooled = torch.cat((self.attn_l(z_l), self.attn_a(z_a), self.attn_v(z_v)), dim=-1)
        joint = self.proj2(F.dropout(F.relu(self.proj1(pooled)), cfg.out_dropout, self.training))
        joint = joint + pooled
        out = CIDerOutput(
            pred=self.causal_head(joint, prototypes, prior),
            joint_rep=joint,
            attn=scores,
            text_hidden=text_hidden,
        )
        if reconstruct:
            out.text_recon = self.recon_text(z_l)
            out.audio_recon = self._recon_series(self.recon_audio, z_a)
            out.vision_recon = self._recon_series(self.recon_vision, z_v)
        return out

    @staticmethod
    def _recon_series(layers: nn.ModuleList, z: torch.Tensor) -> torch.Tensor:
        """z (B, n, d) → time map n → L, ReLU, feature map d → D."""
        stretched = F.relu(layers[0](z.transpose(1, 2)))  # (B, d, L)
        return layers[1](stretched.transpose(1, 2))  # (B, L, D)
