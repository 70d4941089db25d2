"""MulT (Tsai et al., ACL 2019) as specified in docs/baselines.md.

Parameter and buffer names/shapes reproduce the original classes (``MULTModel`` of the ORIG repo
and ``MULT`` of MMSA), so the state dict of a given configuration matches the reference tables
entry for entry. Two implementation choices do not change the mathematics:

- tensors stay batch-major (B, T, E) inside the encoders instead of the reference's time-major
  (T, B, E); every operation is per position or per batch row, so the outputs are identical;
- attention runs through ``F.scaled_dot_product_attention`` with the scale (E/H)^-1/2; the
  reference scales q after its bias and then multiplies by kᵀ, which is the same product. On
  CPU with attention dropout, where that call would keep every (Tq, Tk) weight tensor for
  backward, a blockwise equivalent runs instead (``baselines/mult/attention.py``).

One extension exists only to keep the synthetic benchmark fast on CPU: a temporal conv stride
(``MulTConfig.stride_*``). Every faithful preset uses stride 1, where it is the reference conv.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.mult.attention import attention
from mer_bench.text_encoder import TextModel

MODALITIES: tuple[str, ...] = ("l", "a", "v")
"""Text (language), audio, vision: the reference's order for concatenation and readout."""


def crossmodal_pairs() -> list[tuple[str, str]]:
    """(target, source) in the originals' order: l←a, l←v, a←l, a←v, v←l, v←a."""
    return [(t, s) for t in MODALITIES for s in MODALITIES if s != t]


class ModalityLookups:
    """Per-modality reads of a MulT-family config (MulT, TFR-Net), ``m`` one of MODALITIES.

    A mixin for frozen dataclasses that carry the original's per-modality keys.
    """

    text_dim: int
    audio_dim: int
    vision_dim: int
    kernel_l: int
    kernel_a: int
    kernel_v: int
    attn_dropout: float
    attn_dropout_a: float
    attn_dropout_v: float

    def input_dim(self, m: str) -> int:
        return {"l": self.text_dim, "a": self.audio_dim, "v": self.vision_dim}[m]

    def kernel(self, m: str) -> int:
        return {"l": self.kernel_l, "a": self.kernel_a, "v": self.kernel_v}[m]

    def source_attn_dropout(self, m: str) -> float:
        """Crossmodal attention dropout is chosen by the *source* (key) modality: l←a uses
        ``attn_dropout_a``, l←v ``attn_dropout_v``, a←l and v←l ``attn_dropout``."""
        return {"l": self.attn_dropout, "a": self.attn_dropout_a, "v": self.attn_dropout_v}[m]


@dataclass(frozen=True)
class MulTConfig(ModalityLookups):
    """Geometry and dropout rates of one MulT (names follow docs/baselines.md)."""

    text_dim: int
    audio_dim: int
    vision_dim: int
    out_dim: int
    """1 for regression, the number of classes otherwise."""
    d_model: int = 30
    num_heads: int = 5
    nlevels: int = 5
    kernel_l: int = 1
    kernel_a: int = 1
    kernel_v: int = 1
    stride_l: int = 1
    stride_a: int = 1
    stride_v: int = 1
    text_dropout: float = 0.25
    embed_dropout: float = 0.25
    attn_dropout: float = 0.1
    attn_dropout_a: float = 0.0
    attn_dropout_v: float = 0.0
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    output_dropout: float = 0.0
    attn_mask: bool = True
    pos_embedding: bool = True

    def __post_init__(self) -> None:
        d, h = self.d_model, self.num_heads
        if d <= 0 or h <= 0 or d % h != 0:
            raise ValueError(f"d_model ({d}) must be a positive multiple of num_heads ({h})")
        if self.nlevels < 1:
            raise ValueError(f"nlevels must be >= 1, got {self.nlevels}")

    def stride(self, m: str) -> int:
        return {"l": self.stride_l, "a": self.stride_a, "v": self.stride_v}[m]

    @property
    def mem_layers(self) -> int:
        # The reference asks for "3 layers" but passes max(nlevels, 3) (docs/baselines.md).
        return max(self.nlevels, 3)

    def projected_len(self, m: str, length: int) -> int:
        """T'_m: length after the temporal conv (or ``length`` when the conv is skipped)."""
        if self.conv_skipped(m):
            return length
        return (length - self.kernel(m)) // self.stride(m) + 1

    def conv_skipped(self, m: str) -> bool:
        # The reference skips the projection when the input already has width d (docs/baselines.md).
        return self.input_dim(m) == self.d_model and self.stride(m) == 1


def sinusoidal_table(num_rows: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(num_rows, dim) fairseq sinusoid table: sines then cosines, row 0 = padding (zeros)."""
    half = dim // 2
    step = math.log(10000.0) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=device) * -step)
    angles = torch.arange(num_rows, dtype=torch.float32, device=device).unsqueeze(1) * freqs
    table = torch.cat((torch.sin(angles), torch.cos(angles)), dim=1)
    if dim % 2 == 1:
        table = F.pad(table, (0, 1))
    table[0] = 0.0
    return table


class SinusoidalPositionalEmbedding(nn.Module):
    """Absolute positions t+1, except steps whose feature channel 0 is exactly 0 (index 0)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        # The reference registers this dtype/device carrier; kept so state dicts match.
        self.register_buffer("_float_tensor", torch.zeros(1))

    def forward(self, channel0: torch.Tensor) -> torch.Tensor:
        """channel0: (B, T) unscaled input channel 0 → (B, T, E) embeddings."""
        steps = channel0.shape[1]
        positions = torch.arange(1, steps + 1, device=channel0.device) * (channel0 != 0)
        table = sinusoidal_table(steps + 1, self.embed_dim, channel0.device)
        return F.embedding(positions, table).to(channel0.dtype)


def visible_keys(tq: int, tk: int, device: torch.device) -> torch.Tensor | None:
    """Bool (Tq, Tk) mask, True = visible: key j is hidden iff j >= i + 1 + |Tk - Tq|.

    None when every key is visible (then no mask is passed at all).
    """
    offset = 1 + abs(tk - tq)
    if tk - 1 < offset:
        return None
    i = torch.arange(tq, device=device).unsqueeze(1)
    j = torch.arange(tk, device=device).unsqueeze(0)
    return j < i + offset


class MultiheadAttention(nn.Module):
    """fairseq-style attention: packed in-projection, no bias_k/v, no zero attention."""

    def __init__(self, embed_dim: int, num_heads: int, attn_dropout: float) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.attn_dropout = attn_dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
        causal: bool,
    ) -> torch.Tensor:
        e = self.embed_dim
        w, bias = self.in_proj_weight, self.in_proj_bias
        if query is key and key is value:
            q, k, v = F.linear(query, w, bias).chunk(3, dim=-1)
        else:
            q = F.linear(query, w[:e], bias[:e])
            if key is value:
                k, v = F.linear(key, w[e:], bias[e:]).chunk(2, dim=-1)
            else:
                k = F.linear(key, w[e : 2 * e], bias[e : 2 * e])
                v = F.linear(value, w[2 * e :], bias[2 * e :])
        ctx = attention(
            self._heads(q),
            self._heads(k),
            self._heads(v),
            mask,
            causal,
            self.attn_dropout if self.training else 0.0,
            self.head_dim**-0.5,
        )
        b, _, tq, _ = ctx.shape
        return self.out_proj(ctx.transpose(1, 2).reshape(b, tq, e))


class TransformerEncoderLayer(nn.Module):
    """Pre-LN layer; query, key and value share LN0, the residual is the un-normalised x."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        attn_dropout: float,
        relu_dropout: float,
        res_dropout: float,
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(embed_dim, num_heads, attn_dropout)
        self.fc1 = nn.Linear(embed_dim, 4 * embed_dim)
        self.fc2 = nn.Linear(4 * embed_dim, embed_dim)
        self.layer_norms = nn.ModuleList([nn.LayerNorm(embed_dim) for _ in range(2)])
        self.relu_dropout = relu_dropout
        self.res_dropout = res_dropout
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(
        self,
        x: torch.Tensor,
        key: torch.Tensor | None,
        value: torch.Tensor | None,
        mask: torch.Tensor | None,
        causal: bool,
        key_normed: bool = False,
    ) -> torch.Tensor:
        """``key_normed``: key/value already went through this layer's LN0."""
        ln0, ln1 = self.layer_norms
        xn = ln0(x)
        if key is None or value is None:
            attn = self.self_attn(xn, xn, xn, mask, causal)
        elif key_normed:
            attn = self.self_attn(xn, key, value, mask, causal)
        else:
            kn = ln0(key)
            vn = kn if value is key else ln0(value)
            attn = self.self_attn(xn, kn, vn, mask, causal)
        x = x + F.dropout(attn, self.res_dropout, self.training)
        h = F.dropout(F.relu(self.fc1(ln1(x))), self.relu_dropout, self.training)
        return x + F.dropout(self.fc2(h), self.res_dropout, self.training)


class TransformerEncoder(nn.Module):
    """The one encoder of MulT, crossmodal (query + fixed source) or self-attention."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        layers: int,
        attn_dropout: float,
        relu_dropout: float,
        res_dropout: float,
        embed_dropout: float,
        attn_mask: bool,
        pos_embedding: bool,
    ) -> None:
        super().__init__()
        # Unused by the computation; registered so checkpoints match the reference.
        self.register_buffer("version", torch.tensor([2.0]))
        self.embed_scale = math.sqrt(embed_dim)
        self.embed_dropout = embed_dropout
        self.attn_mask = attn_mask
        self.embed_positions = SinusoidalPositionalEmbedding(embed_dim) if pos_embedding else None
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(embed_dim, num_heads, attn_dropout, relu_dropout, res_dropout)
            for _ in range(layers)
        )
        self.layer_norm = nn.LayerNorm(embed_dim)

    def _embed(self, x_in: torch.Tensor) -> torch.Tensor:
        x = self.embed_scale * x_in
        if self.embed_positions is not None:
            x = x + self.embed_positions(x_in[..., 0])
        return F.dropout(x, self.embed_dropout, self.training)

    def forward(
        self,
        x_in: torch.Tensor,
        x_in_k: torch.Tensor | None = None,
        x_in_v: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """(B, Tq, E) query stream [+ (B, Tk, E) source] → (B, Tq, E).

        ``last_only`` (self-attention only) returns just the last step, (B, 1, E): the final
        layer then computes that one query, which equals the full output's last step.
        """
        x = self._embed(x_in)
        key = value = None
        if x_in_k is not None and x_in_v is not None:
            key = self._embed(x_in_k)
            # K and V take independent dropout masks; without active dropout they are
            # the same tensor, which lets the attention project both in one matmul.
            same = x_in_v is x_in_k and not (self.training and self.embed_dropout > 0)
            value = key if same else self._embed(x_in_v)
        tq = x.shape[1]
        tk = tq if key is None else key.shape[1]
        mask, causal = None, False
        if self.attn_mask:
            if tq == tk:
                causal = True
            else:
                mask = visible_keys(tq, tk, x.device)
        if last_only and key is not None:
            raise ValueError("last_only applies to self-attention encoders")
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if last_only and i == last:
                # The last query sees every key under the causal mask, so no mask is needed.
                xn = layer.layer_norms[0](x)
                x = layer(x[:, -1:], xn, xn, None, False, key_normed=True)
            else:
                x = layer(x, key, value, mask, causal)
        return self.layer_norm(x)


class BertTextEncoder(TextModel):
    """MMSA's wrapper: (B, 3, n) ids/mask/segments → (B, n, H) last hidden states."""

    def forward(self, text_bert: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ids, mask, segments = text_bert.unbind(dim=1)
        return super().forward(ids, mask, segments)


class MulT(nn.Module):
    """Conv projections → six crossmodal encoders → three memory encoders → residual head."""

    def __init__(self, config: MulTConfig, text_model: BertTextEncoder | None = None) -> None:
        super().__init__()
        self.config = config
        # Registered first, as in MMSA, so its entries lead the state dict (``text_model.``).
        self.text_model = text_model
        d = config.d_model
        for m in MODALITIES:
            conv = nn.Conv1d(
                config.input_dim(m),
                d,
                kernel_size=config.kernel(m),
                stride=config.stride(m),
                padding=0,
                bias=False,
            )
            self.add_module(f"proj_{m}", conv)
        common = {
            "num_heads": config.num_heads,
            "relu_dropout": config.relu_dropout,
            "res_dropout": config.res_dropout,
            "embed_dropout": config.embed_dropout,
            "attn_mask": config.attn_mask,
            "pos_embedding": config.pos_embedding,
        }
        for tgt, src in crossmodal_pairs():
            encoder = TransformerEncoder(
                d, layers=config.nlevels, attn_dropout=config.source_attn_dropout(src), **common
            )
            self.add_module(f"trans_{tgt}_with_{src}", encoder)
        for m in MODALITIES:
            encoder = TransformerEncoder(
                2 * d, layers=config.mem_layers, attn_dropout=config.attn_dropout, **common
            )
            self.add_module(f"trans_{m}_mem", encoder)
        width = 6 * d
        self.proj1 = nn.Linear(width, width)
        self.proj2 = nn.Linear(width, width)
        self.out_layer = nn.Linear(width, config.out_dim)

    def _project(self, m: str, x: torch.Tensor) -> torch.Tensor:
        if self.config.conv_skipped(m):
            return x
        conv: nn.Conv1d = getattr(self, f"proj_{m}")
        return conv(x.transpose(1, 2)).transpose(1, 2)

    def forward(
        self, text: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """text: (B, n, D_l) features, or (B, 3, n) token ids/mask/segments with a text model;
        audio (B, T_a, D_a); vision (B, T_v, D_v). Returns MMSA's output dict."""
        if self.text_model is not None:
            text = self.text_model(text)
        text = F.dropout(text, self.config.text_dropout, self.training)
        proj = {
            m: self._project(m, x) for m, x in zip(MODALITIES, (text, audio, vision), strict=True)
        }
        last = {}
        for tgt in MODALITIES:
            fused = torch.cat(
                [
                    getattr(self, f"trans_{tgt}_with_{src}")(proj[tgt], proj[src], proj[src])
                    for src in MODALITIES
                    if src != tgt
                ],
                dim=-1,
            )
            # Readout is the last index whatever the true length (docs/baselines.md).
            last[tgt] = getattr(self, f"trans_{tgt}_mem")(fused, last_only=True)[:, -1]
        last_hs = torch.cat([last[m] for m in MODALITIES], dim=-1)
        hidden = F.dropout(F.relu(self.proj1(last_hs)), self.config.output_dropout, self.training)
        output = self.out_layer(self.proj2(hidden) + last_hs)
        return {
            "M": output,
            "Feature_t": last["l"],
            "Feature_a": last["a"],
            "Feature_v": last["v"],
            "Feature_f": last_hs,
        }
