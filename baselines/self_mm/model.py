"""Self-MM's network (Yu et al., AAAI 2021), docs/baselines.md.

Parameter names follow MMSA's ``SELF_MM`` class so that a non-BERT state dict lines up with the
reference table (``selfmm_state_dict_mmsa_mosi_unaligned.tsv``) and BERT sits under
``text_model.model.`` as in MMSA's ``BertTextEncoder``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from baselines.common.streams import StreamLSTM
from mer_bench.text_encoder import TextModel, build_text_encoder


@dataclass(frozen=True)
class SelfMMConfig:
    """Widths and dropouts of the network (the reference config's keys, optimiser ones aside)."""

    audio_dim: int
    vision_dim: int
    a_lstm_hidden_size: int = 16
    v_lstm_hidden_size: int = 32
    a_lstm_layers: int = 1
    v_lstm_layers: int = 1
    a_lstm_dropout: float = 0.0
    v_lstm_dropout: float = 0.0
    audio_out: int = 16
    video_out: int = 32
    post_fusion_dim: int = 128
    post_text_dim: int = 32
    post_audio_dim: int = 16
    post_video_dim: int = 32
    post_fusion_dropout: float = 0.0
    post_text_dropout: float = 0.1
    post_audio_dropout: float = 0.1
    post_video_dropout: float = 0.0
    fusion_outputs: int = 1
    """1 for the native regression head; C class logits for the classification tasks."""
    aligned: bool = False
    """Aligned data: pack audio and vision with the text lengths, as the reference does."""
    packed: bool = True
    """True: run the LSTMs over packed sequences (the reference). False: run them over the padded
    sequence and read each sample's output at its last valid step, which is the same function
    for a unidirectional LSTM (no host sync; ~10× faster on CPU, where packed backward is slow)."""


class BertTextEncoder(TextModel):
    """Fine-tuned BERT whose [CLS] vector (last layer, position 0) is the text representation."""

    def __init__(self, path: str | None) -> None:
        super().__init__(build_text_encoder(path))

    def forward(
        self, ids: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor
    ) -> torch.Tensor:
        # The [CLS] position, not the pooler (which thus gets no gradient).
        return super().forward(ids, mask, segments)[:, 0]


class AuViSubNet(StreamLSTM):
    """LSTM over the packed sequence; its final hidden state → dropout → Linear."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # A sample whose length would be 0 (or exceed the padded length) is clamped into
        # [1, L] so it cannot crash; with length 1 the LSTM reads only its first frame (zeros
        # when the modality is absent).
        last, _ = self.run(x, lengths, sequence=False)
        return self.linear_1(self.dropout(last))


def _mlp_head(
    in_dim: int, width: int, out_dim: int, dropout: float
) -> tuple[nn.Dropout, nn.Linear, nn.Linear, nn.Linear]:
    return (
        nn.Dropout(dropout),
        nn.Linear(in_dim, width),
        nn.Linear(width, width),
        nn.Linear(width, out_dim),
    )


class SelfMM(nn.Module):
    """Text/audio/vision encoders, the fusion head M and the unimodal heads T, A, V.

    ``forward`` returns ``M`` ((B,) score or (B, C) logits), ``T``, ``A``, ``V`` ((B,)) and the
    features ``Feature_f/t/a/v`` that feed the ULGM memory (post-ReLU output of each branch's
    first Linear, after that branch's input dropout).
    """

    def __init__(self, cfg: SelfMMConfig, text_encoder: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.text_model = BertTextEncoder(text_encoder)
        text_out = self.text_model.hidden_size
        self.audio_model = AuViSubNet(
            cfg.audio_dim,
            cfg.a_lstm_hidden_size,
            cfg.audio_out,
            cfg.a_lstm_layers,
            cfg.a_lstm_dropout,
            cfg.packed,
        )
        self.video_model = AuViSubNet(
            cfg.vision_dim,
            cfg.v_lstm_hidden_size,
            cfg.video_out,
            cfg.v_lstm_layers,
            cfg.v_lstm_dropout,
            cfg.packed,
        )
        fused = text_out + cfg.audio_out + cfg.video_out
        (
            self.post_fusion_dropout,
            self.post_fusion_layer_1,
            self.post_fusion_layer_2,
            self.post_fusion_layer_3,
        ) = _mlp_head(fused, cfg.post_fusion_dim, cfg.fusion_outputs, cfg.post_fusion_dropout)
        (
            self.post_text_dropout,
            self.post_text_layer_1,
            self.post_text_layer_2,
            self.post_text_layer_3,
        ) = _mlp_head(text_out, cfg.post_text_dim, 1, cfg.post_text_dropout)
        (
            self.post_audio_dropout,
            self.post_audio_layer_1,
            self.post_audio_layer_2,
            self.post_audio_layer_3,
        ) = _mlp_head(cfg.audio_out, cfg.post_audio_dim, 1, cfg.post_audio_dropout)
        (
            self.post_video_dropout,
            self.post_video_layer_1,
            self.post_video_layer_2,
            self.post_video_layer_3,
        ) = _mlp_head(cfg.video_out, cfg.post_video_dim, 1, cfg.post_video_dropout)

    @staticmethod
    def _branch(
        x: torch.Tensor, drop: nn.Dropout, l1: nn.Linear, l2: nn.Linear, l3: nn.Linear
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feature = torch.relu(l1(drop(x)))
        return feature, l3(torch.relu(l2(feature)))

    def forward(
        self,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        text_segments: torch.Tensor,
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        vision: torch.Tensor,
        vision_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        t = self.text_model(text_ids, text_mask, text_segments)
        if self.cfg.aligned:
            text_lengths = text_mask.sum(dim=1)
            audio_lengths = vision_lengths = text_lengths
        a = self.audio_model(audio, audio_lengths)
        v = self.video_model(vision, vision_lengths)
        f_f, m = self._branch(
            torch.cat((t, a, v), dim=-1),
            self.post_fusion_dropout,
            self.post_fusion_layer_1,
            self.post_fusion_layer_2,
            self.post_fusion_layer_3,
        )
        f_t, out_t = self._branch(
            t,
            self.post_text_dropout,
            self.post_text_layer_1,
            self.post_text_layer_2,
            self.post_text_layer_3,
        )
        f_a, out_a = self._branch(
            a,
            self.post_audio_dropout,
            self.post_audio_layer_1,
            self.post_audio_layer_2,
            self.post_audio_layer_3,
        )
        f_v, out_v = self._branch(
            v,
            self.post_video_dropout,
            self.post_video_layer_1,
            self.post_video_layer_2,
            self.post_video_layer_3,
        )
        return {
            "M": m.squeeze(-1) if self.cfg.fusion_outputs == 1 else m,
            "T": out_t.squeeze(-1),
            "A": out_a.squeeze(-1),
            "V": out_v.squeeze(-1),
            "Feature_f": f_f,
            "Feature_t": f_t,
            "Feature_a": f_a,
            "Feature_v": f_v,
        }
