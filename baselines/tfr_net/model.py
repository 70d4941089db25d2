"""TFR-Net (Yuan et al., ACM MM 2021): transformer-based feature reconstruction network.

Written from the released code (thuiar/TFR-Net at its last commit, and MMSA's copy, which builds
the same MOSI model). Parameter and buffer names, shapes and their order reproduce the original
``TFR_NET`` class, so the non-BERT state dict of a configuration matches it entry for entry.

Forward order, batch-major throughout (the original is time-major; every operation is per
position or per batch row, so this changes no number):

1. BERT (fine-tuned) on the corrupted token ids, dropout, bias-free "same"-padded Conv1d
   projections of text/audio/vision to width ``d``;
2. per modality, the concatenation [self encoder, crossmodal encoder from the first partner,
   from the second partner] (partners in l, a, v order) → H_m (B, L_m, 3d);
3. fusion: a gated bidirectional GRU per modality (packed to the true lengths), max-pooled over
   *all* positions, then a BatchNorm + MLP head → the prediction;
4. reconstruction (training only): a "final" transformer per modality whose embedding width is
   that modality's sequence length, then one Linear per modality back to the input features.

The final transformers are where the two forms differ (``FinalAttention``). The released code
hands them (B, 3d, L) while they expect (sequence, batch, embedding), so the *batch* axis becomes
the sequence: under the causal mask sample i attends to samples 0..i of its mini-batch, and its
reconstruction depends on which samples happen to precede it (``FinalAttention.BATCH``, the
original). ``FinalAttention.SAMPLE`` keeps the attention inside each sample: its 3d feature
channels are the tokens, each embedded by its whole time course (width L_m), which is what the
widths imply (the causal mask, on in every encoder, then runs over channels). Both forms have
the same parameters; predictions never go through this branch, so
only training differs.

The transformer encoders are MulT's (``baselines.mult.model``): pre-LN layers, packed
in-projection, sinusoidal positions that skip steps whose channel 0 is exactly zero, crossmodal
key/value with independent embedding dropout, and the causal-with-offset mask on every encoder.
So are the BERT wrapper, the modality order (l, a, v), the crossmodal pair order and the
per-modality config reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from baselines.mult.model import (
    MODALITIES,
    BertTextEncoder,
    ModalityLookups,
    TransformerEncoder,
    crossmodal_pairs,
)

_GENERATOR_NAME = {"l": "t", "a": "a", "v": "v"}
_FUSION_NAME = {"l": "text", "a": "audio", "v": "vision"}


class FinalAttention(str, Enum):
    """What the three reconstruction ("final") transformers attend over."""

    BATCH = "batch"
    """The original: the mini-batch is the sequence (causal over samples 0..i)."""
    SAMPLE = "sample"
    """Fixed: within each sample, over its feature channels (time courses as embeddings)."""


@dataclass(frozen=True)
class TFRNetConfig(ModalityLookups):
    """Geometry and dropout rates of one TFR-Net (names follow the original's config keys)."""

    text_dim: int
    """BERT hidden size (768 for bert-base-uncased)."""
    audio_dim: int
    vision_dim: int
    text_len: int
    audio_len: int
    vision_len: int
    """Sequence lengths: they are the embedding widths of the final transformers."""
    out_dim: int = 1
    """1 for regression, the number of classes otherwise."""
    d_model: int = 30
    num_heads: int = 6
    nlevels: int = 3
    num_temporal_head: int = 25
    kernel_l: int = 1
    kernel_a: int = 5
    kernel_v: int = 3
    text_dropout: float = 0.2
    attn_dropout: float = 0.2
    attn_dropout_a: float = 0.1
    attn_dropout_v: float = 0.0
    relu_dropout: float = 0.2
    embed_dropout: float = 0.2
    res_dropout: float = 0.2
    attn_mask: bool = True
    fusion_t_hid: int = 36
    fusion_a_hid: int = 20
    fusion_v_hid: int = 48
    fusion_gru_layers: int = 3
    fusion_drop: float = 0.2
    cls_hidden_dim: int = 128
    cls_dropout: float = 0.0
    final_attention: FinalAttention = FinalAttention.BATCH

    def __post_init__(self) -> None:
        if self.d_model <= 0 or self.num_heads <= 0 or self.d_model % self.num_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be a positive multiple of num_heads "
                f"({self.num_heads})"
            )
        for m in MODALITIES:
            length = self.seq_len(m)
            if length < 1 or length % self.num_temporal_head:
                raise ValueError(
                    f"num_temporal_head ({self.num_temporal_head}) must divide the {m} sequence "
                    f"length ({length}): it is the width of that final transformer"
                )
            if self.kernel(m) < 1 or self.kernel(m) % 2 == 0:
                # "Same" padding (k-1)/2 keeps the length only for odd kernels.
                raise ValueError(f"conv kernel for {m} must be odd and >= 1, got {self.kernel(m)}")
        if self.nlevels < 1 or self.fusion_gru_layers < 1:
            raise ValueError("nlevels and fusion_gru_layers must be >= 1")

    def seq_len(self, m: str) -> int:
        return {"l": self.text_len, "a": self.audio_len, "v": self.vision_len}[m]

    def fusion_hidden(self, m: str) -> int:
        return {"l": self.fusion_t_hid, "a": self.fusion_a_hid, "v": self.fusion_v_hid}[m]

    @property
    def inner_layers(self) -> int:
        """Self ("mem") and final encoders get max(nlevels, 3) layers; crossmodal ones nlevels."""
        return max(self.nlevels, 3)


class _Slot(nn.Module):
    """The original wraps each sub-network in a holder whose attribute is ``Model``; kept so
    state-dict keys read ``align_subnet.Model.…``, ``generator_t.Model.…`` and so on."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.Model = module

    def forward(self, *args, **kwargs):  # pragma: no cover - the holders are never called
        return self.Model(*args, **kwargs)


class Alignment(nn.Module):
    """Conv projections, six crossmodal + three self encoders, and the three final encoders."""

    def __init__(self, config: TFRNetConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        for m in MODALITIES:
            k = config.kernel(m)
            conv = nn.Conv1d(config.input_dim(m), d, k, padding=(k - 1) // 2, bias=False)
            self.add_module(f"proj_{m}", conv)
        common = {
            "relu_dropout": config.relu_dropout,
            "res_dropout": config.res_dropout,
            "embed_dropout": config.embed_dropout,
            "attn_mask": config.attn_mask,
        }
        for tgt, src in crossmodal_pairs():
            encoder = TransformerEncoder(
                d,
                config.num_heads,
                config.nlevels,
                attn_dropout=config.source_attn_dropout(src),
                pos_embedding=True,
                **common,
            )
            self.add_module(f"trans_{tgt}_with_{src}", encoder)
        for m in MODALITIES:
            encoder = TransformerEncoder(
                d,
                config.num_heads,
                config.inner_layers,
                attn_dropout=config.attn_dropout,
                pos_embedding=True,
                **common,
            )
            self.add_module(f"trans_{m}_mem", encoder)
        for m in MODALITIES:
            encoder = TransformerEncoder(
                config.seq_len(m),
                config.num_temporal_head,
                config.inner_layers,
                attn_dropout=config.attn_dropout,
                pos_embedding=False,
                **common,
            )
            self.add_module(f"trans_{m}_final", encoder)

    def _project(self, m: str, x: torch.Tensor) -> torch.Tensor:
        # The original skips the projection when the input already has width d.
        if x.shape[-1] == self.config.d_model:
            return x
        conv: nn.Conv1d = getattr(self, f"proj_{m}")
        return conv(x.transpose(1, 2)).transpose(1, 2)

    def forward(
        self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """(B, L_m, D_m) streams (text = BERT states) → H_m (B, L_m, 3d) per modality."""
        text = F.dropout(text, self.config.text_dropout, self.training)
        x = {m: self._project(m, s) for m, s in zip(MODALITIES, (text, audio, vision), strict=True)}
        hidden = {}
        for tgt in MODALITIES:
            parts = [getattr(self, f"trans_{tgt}_mem")(x[tgt])]
            for src in MODALITIES:
                if src != tgt:
                    parts.append(getattr(self, f"trans_{tgt}_with_{src}")(x[tgt], x[src], x[src]))
            hidden[tgt] = torch.cat(parts, dim=-1)
        return hidden

    def final(self, m: str, hidden: torch.Tensor) -> torch.Tensor:
        """G_m (B, L_m, 3d) from H_m (B, L_m, 3d) through the final encoder of modality m."""
        encoder: TransformerEncoder = getattr(self, f"trans_{m}_final")
        if self.config.final_attention is FinalAttention.BATCH:
            # Batch-major view of the original's call: (3d, B, L) = channels as the batch, the
            # mini-batch as the sequence, time as the embedding (Q-1 of the spec's pitfalls).
            return encoder(hidden.permute(2, 0, 1)).permute(1, 2, 0)
        return encoder(hidden.transpose(1, 2)).transpose(1, 2)


class Generator(nn.Module):
    """The ``linear`` generator: one position-wise Linear from 3d back to the input width."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class PackedBiGRU(nn.Module):
    """Bidirectional GRU run on each sequence's true length; zeros at padded steps."""

    def __init__(self, in_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.gru = nn.GRU(in_dim, hidden, num_layers=layers, bidirectional=True, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Packing needs host lengths (one transfer per modality and call).
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out


class CGate(nn.Module):
    """``c_gate`` fusion for one modality: gated BiGRU features, projection, max-pool."""

    def __init__(self, in_dim: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.gru = PackedBiGRU(in_dim, hidden, layers)
        self.cnn = nn.Conv1d(2 * hidden, 1, kernel_size=3, padding=1)
        self.fc = nn.Linear(in_dim + 2 * hidden, hidden)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, in_dim), validity mask (B, L) → (B, hidden)."""
        # Length = index of the first 0 of the mask with a 0 appended (the original's argmin).
        padded = F.pad(mask.to(torch.float32), (0, 1))
        lengths = padded.argmin(dim=1).clamp_min(1)  # packing refuses empty sequences
        rnn = self.gru(x, lengths)
        gate = torch.sigmoid(self.cnn(rnn.transpose(1, 2))).transpose(1, 2)
        gated = torch.tanh(rnn) * gate
        proj = torch.tanh(self.fc(torch.cat([x, gated], dim=-1)))
        # The max runs over every position, padding included, as in the original.
        return F.dropout(proj.max(dim=1).values, self.dropout, self.training)


class Classifier(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.linear_trans_norm = nn.BatchNorm1d(in_dim)
        self.linear_trans_hidden = nn.Linear(in_dim, hidden)
        self.linear_trans_final = nn.Linear(hidden, out_dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.linear_trans_hidden(self.linear_trans_norm(x)), 0.01)
        return self.linear_trans_final(F.dropout(h, self.dropout, self.training))


class Fusion(nn.Module):
    def __init__(self, config: TFRNetConfig) -> None:
        super().__init__()
        width = 3 * config.d_model
        for m in MODALITIES:
            block = CGate(
                width, config.fusion_hidden(m), config.fusion_gru_layers, config.fusion_drop
            )
            self.add_module(f"{_FUSION_NAME[m]}_encoder", block)
        total = sum(config.fusion_hidden(m) for m in MODALITIES)
        self.classifier = Classifier(
            total, config.cls_hidden_dim, config.out_dim, config.cls_dropout
        )

    def forward(
        self, hidden: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        pooled = [
            getattr(self, f"{_FUSION_NAME[m]}_encoder")(hidden[m], masks[m]) for m in MODALITIES
        ]
        return self.classifier(torch.cat(pooled, dim=-1))


@dataclass(frozen=True)
class TFRNetOutput:
    prediction: torch.Tensor
    """(B, out_dim)"""
    hidden: dict[str, torch.Tensor]
    """H_m (B, L_m, 3d): the fused per-modality features the reconstruction branch reads."""


class TFRNet(nn.Module):
    """BERT → alignment → (fusion → prediction, final transformers → generators)."""

    def __init__(self, config: TFRNetConfig, text_model: BertTextEncoder) -> None:
        super().__init__()
        self.config = config
        self.text_model = text_model
        self.align_subnet = _Slot(Alignment(config))
        width = 3 * config.d_model
        for m in MODALITIES:
            self.add_module(
                f"generator_{_GENERATOR_NAME[m]}", _Slot(Generator(width, config.input_dim(m)))
            )
        self.fusion_subnet = _Slot(Fusion(config))

    @property
    def alignment(self) -> Alignment:
        return self.align_subnet.Model

    def forward(
        self,
        text_bert: torch.Tensor,
        audio: torch.Tensor,
        vision: torch.Tensor,
        audio_mask: torch.Tensor,
        vision_mask: torch.Tensor,
    ) -> TFRNetOutput:
        """Inputs of the (possibly corrupted) view; masks are the original validity masks."""
        text = self.text_model(text_bert)
        hidden = self.alignment(text, audio, vision)
        masks = {"l": text_bert[:, 1], "a": audio_mask, "v": vision_mask}
        prediction = self.fusion_subnet.Model(hidden, masks)
        return TFRNetOutput(prediction, hidden)

    def reconstruct(self, hidden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Generator outputs per modality: text (B, n, H), audio (B, L_a, D_a), vision."""
        out = {}
        for m in MODALITIES:
            generator: _Slot = getattr(self, f"generator_{_GENERATOR_NAME[m]}")
            out[m] = generator.Model(self.alignment.final(m, hidden[m]))
        return out


def cmd(x: torch.Tensor, y: torch.Tensor, moments: int = 3) -> torch.Tensor:
    """Central moment discrepancy over rows of (N, D): mean distance plus the distances of the
    2nd..``moments``-th central moments, each an L2 norm sqrt(Σ² + 1e-12)."""

    def norm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(((a - b) ** 2).sum() + 1e-12)

    mx, my = x.mean(dim=0), y.mean(dim=0)
    cx, cy = x - mx, y - my
    total = norm(mx, my)
    for k in range(2, moments + 1):
        total = total + norm((cx**k).mean(dim=0), (cy**k).mean(dim=0))
    return total


def reconstruction_loss(
    generated: torch.Tensor,
    target: torch.Tensor,
    missing: torch.Tensor,
    sim_weight: float = 0.0,
    eps: float = 1e-4,
) -> torch.Tensor:
    """SmoothL1 (β=1) summed over missing elements / (their count + eps); plus CMD if weighted.

    ``missing`` (B, L): 1 on valid but dropped positions. The count is positions × feature width,
    so the loss is a per-element mean over missing entries and exactly 0 when nothing is missing.
    """
    m = missing.to(generated.dtype).unsqueeze(-1)
    p, y = generated * m, target * m
    count = m.sum() * generated.shape[-1] + eps
    loss = F.smooth_l1_loss(p, y, reduction="sum", beta=1.0) / count
    if sim_weight != 0.0:
        # The original's CMD flattens every row, the all-zero non-missing ones included.
        d = generated.shape[-1]
        loss = loss + sim_weight * cmd(p.reshape(-1, d), y.reshape(-1, d)) / count
    return loss
