"""LNLN's network (Zhang, Wang & Yu, NeurIPS 2024: "Towards Robust Multimodal Sentiment Analysis
with Incomplete Data"), re-implemented from the original code.

Parameter names and creation order follow the original ``LNLN`` class so that the non-BERT state
dict lines up name for name with the original (BERT sits under ``bertmodel.model.``). The
original's quirks are kept on purpose and marked where they occur (see docs/lnln.md):

- the gradient-reversal layer sits on the prediction path, not only on the discriminator branch;
- the discriminator tells the mixed dominant feature from the complete-language tokens;
- the hyper-modality residual is added to the *normalised* hyper-modality state;
- the learnable start vectors (``h_p``, ``h_hyper``) are ones and the extra tokens zeros;
- no attention masks outside BERT: audio and vision attend over padded frames too.

Widths, depths and head counts are configurable (the original hard-codes d = 128 and 8 tokens);
the presets for real data use the original's values. ``pool_frames_to`` (synth only, 0 = off)
mean-pools audio/vision windows before the embedding so that long unaligned streams are cheap on a
CPU; with 0 the network is the original's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mer_bench.text_encoder import TextModel, build_text_encoder

BERT_PREFIX = "bertmodel."
"""State-dict prefix of the text encoder (excluded from the parity tables)."""


@dataclass(frozen=True)
class LNLNConfig:
    """Shapes of the network. Defaults are the original MOSI configuration."""

    audio_dim: int = 5
    vision_dim: int = 20
    text_len: int = 50
    audio_len: int = 375
    vision_len: int = 500
    out_dim: int = 1
    """1 for the native regression head; C class logits for the classification tasks."""
    dim: int = 128
    tokens: int = 8
    """Learnable "extra" tokens every embedding keeps (the original's T = 8)."""
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 128
    embed_depth: int = 2
    """Depth of every small Transformer (embeddings, completeness check, proxy generator,
    reconstructors, language encoder)."""
    hyper_depth: int = 3
    hyper_heads: int = 8
    fusion_depth: int = 2
    """Cross-transformer depth: 2 for MOSI, 4 for MOSEI in the original configs."""
    pool_frames_to: int = 0
    """0 = off (the original). Otherwise audio/vision are mean-pooled in windows of
    ceil(L / pool_frames_to) frames before the embedding (synthetic benchmark only)."""

    def __post_init__(self) -> None:
        if self.dim % self.hyper_heads:
            raise ValueError(f"dim {self.dim} is not divisible by hyper_heads {self.hyper_heads}")
        for name in ("dim", "tokens", "heads", "dim_head", "mlp_dim", "embed_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("hyper_depth", "fusion_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pool_frames_to < 0:
            raise ValueError(f"pool_frames_to must be >= 0 (0 = off), got {self.pool_frames_to}")

    def pool_window(self, length: int) -> int:
        return 1 if self.pool_frames_to == 0 else max(1, math.ceil(length / self.pool_frames_to))

    def pooled_len(self, length: int) -> int:
        return math.ceil(length / self.pool_window(length))


# ----------------------------------------------------------------------------- building blocks


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return -grad


def grad_reverse(x: torch.Tensor) -> torch.Tensor:
    """Identity forward; the backward pass multiplies the gradient by −1 (alpha = 1)."""
    return _GradReverse.apply(x)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ / sqrt(d_head))·v over (B, H, n, d) heads, without mask."""
    return F.scaled_dot_product_attention(q, k, v)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class Attention(nn.Module):
    """Multi-head attention without mask or bias on q/k/v; scale 1/sqrt(dim_head)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h = self.heads
        out = _attend(
            _split_heads(self.to_q(q), h),
            _split_heads(self.to_k(k), h),
            _split_heads(self.to_v(v), h),
        )
        return self.to_out(_merge_heads(out))


class PreNormQKV(nn.Module):
    """Three LayerNorms, one each for query, key and value sources, then attention."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_k = nn.LayerNorm(dim)
        self.norm_v = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm_q(q), self.norm_k(k), self.norm_v(v))


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(0.0),
            nn.Linear(hidden, dim),
            nn.Dropout(0.0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _layers(cfg: LNLNConfig, depth: int) -> nn.ModuleList:
    return nn.ModuleList(
        nn.ModuleList(
            [
                PreNormQKV(cfg.dim, Attention(cfg.dim, cfg.heads, cfg.dim_head)),
                PreNorm(cfg.dim, FeedForward(cfg.dim, cfg.mlp_dim)),
            ]
        )
        for _ in range(depth)
    )


class TransformerEncoder(nn.Module):
    """Pre-norm self-attention layers with residuals and no final LayerNorm."""

    def __init__(self, cfg: LNLNConfig, depth: int) -> None:
        super().__init__()
        self.layers = _layers(cfg, depth)

    def forward(self, x: torch.Tensor, save_hidden: bool = False) -> list[torch.Tensor]:
        hidden = [x]
        for attn, ff in self.layers:
            x = attn(x, x, x) + x
            x = ff(x) + x
            hidden.append(x)
        return hidden if save_hidden else [x]


class Transformer(nn.Module):
    """Learnable extra tokens (optional) prepended, randn positional embedding, encoder."""

    def __init__(
        self,
        cfg: LNLNConfig,
        num_frames: int,
        token_len: int | None,
        depth: int,
        save_hidden: bool = False,
    ) -> None:
        super().__init__()
        self.token_len = token_len
        self.save_hidden = save_hidden
        extra = token_len or 0
        self.pos_embedding = nn.Parameter(torch.randn(1, num_frames + extra, cfg.dim))
        if token_len is not None:
            self.extra_token = nn.Parameter(torch.zeros(1, token_len, cfg.dim))
        self.encoder = TransformerEncoder(cfg, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.token_len is not None:
            x = torch.cat((self.extra_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embedding[:, : x.shape[1]]
        hidden = self.encoder(x, save_hidden=self.save_hidden)
        return hidden if self.save_hidden else hidden[-1]


class CrossTransformer(nn.Module):
    """Target tokens attend to source tokens; one shared zero extra token on both sides."""

    def __init__(self, cfg: LNLNConfig, source_len: int, target_len: int, depth: int) -> None:
        super().__init__()
        self.pos_embedding_s = nn.Parameter(torch.randn(1, source_len + 1, cfg.dim))
        self.pos_embedding_t = nn.Parameter(torch.randn(1, target_len + 1, cfg.dim))
        self.extra_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.CrossTransformerEncoder = _CrossEncoder(cfg, depth)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        e = self.extra_token.expand(source.shape[0], -1, -1)
        s = torch.cat((e, source), dim=1) + self.pos_embedding_s[:, : source.shape[1] + 1]
        t = torch.cat((e, target), dim=1) + self.pos_embedding_t[:, : target.shape[1] + 1]
        return self.CrossTransformerEncoder(s, t)


class _CrossEncoder(nn.Module):
    def __init__(self, cfg: LNLNConfig, depth: int) -> None:
        super().__init__()
        self.layers = _layers(cfg, depth)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            target = attn(target, source, source) + target
            target = ff(target) + target
        return target


class HyperModalityAttention(nn.Module):
    """One query (language) attending separately to audio and vision; outputs summed."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k_ta = nn.Linear(dim, dim, bias=False)
        self.to_k_tv = nn.Linear(dim, dim, bias=False)
        self.to_v_ta = nn.Linear(dim, dim, bias=False)
        self.to_v_tv = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(
        self, lang: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor
    ) -> torch.Tensor:
        h = self.heads
        q = _split_heads(self.to_q(lang), h)
        out_a = _attend(
            q, _split_heads(self.to_k_ta(audio), h), _split_heads(self.to_v_ta(audio), h)
        )
        out_v = _attend(
            q, _split_heads(self.to_k_tv(vision), h), _split_heads(self.to_v_tv(vision), h)
        )
        return self.to_out(_merge_heads(out_a + out_v))


class HyperModalityLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.fn = HyperModalityAttention(dim, heads)

    def forward(
        self, lang: torch.Tensor, audio: torch.Tensor, vision: torch.Tensor, hyper: torch.Tensor
    ) -> torch.Tensor:
        shift = self.fn(self.norm1(lang), self.norm2(audio), self.norm3(vision))
        # Quirk reproduced: the residual is added to the *normalised* state.
        return self.norm4(hyper) + shift


class HyperModalityLearning(nn.Module):
    def __init__(self, cfg: LNLNConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([HyperModalityLayer(cfg.dim, cfg.hyper_heads)])
            for _ in range(cfg.hyper_depth)
        )

    def forward(
        self,
        lang_hidden: list[torch.Tensor],
        audio: torch.Tensor,
        vision: torch.Tensor,
        hyper: torch.Tensor,
    ) -> torch.Tensor:
        # Layer i reads the language encoder's i-th hidden state (0 = its input + position).
        for i, (layer,) in enumerate(self.layers):
            hyper = layer(lang_hidden[min(i, len(lang_hidden) - 1)], audio, vision, hyper)
        return hyper


def _mlp_head(dim: int, hidden: int, out: int, sigmoid: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(dim, hidden), nn.LeakyReLU(0.1), nn.Linear(hidden, out)]
    if sigmoid:
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class LNLNInputs:
    """One view of a batch as the network reads it."""

    text_ids: torch.Tensor
    text_mask: torch.Tensor
    text_segments: torch.Tensor
    audio: torch.Tensor
    vision: torch.Tensor

    @staticmethod
    def cat(a: LNLNInputs, b: LNLNInputs) -> LNLNInputs:
        return LNLNInputs(
            *(torch.cat((x, y), dim=0) for x, y in zip(_fields(a), _fields(b), strict=True))
        )


def _fields(x: LNLNInputs) -> tuple[torch.Tensor, ...]:
    return (x.text_ids, x.text_mask, x.text_segments, x.audio, x.vision)


class LNLN(nn.Module):
    """The LNLN network. ``forward(incomplete, complete=None)`` as in the original: the training-
    only branch (reconstructors, discriminator, complete-input targets) runs when ``complete`` is
    given."""

    def __init__(self, cfg: LNLNConfig, text_encoder: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        d, T, depth = cfg.dim, cfg.tokens, cfg.embed_depth
        self.h_hyper = nn.Parameter(torch.ones(1, T, d))
        self.h_p = nn.Parameter(torch.ones(1, T, d))
        self.bertmodel = TextModel(build_text_encoder(text_encoder))
        hidden = self.bertmodel.hidden_size
        self.proj_l = nn.Sequential(nn.Linear(hidden, d), Transformer(cfg, cfg.text_len, T, depth))
        self.proj_a = nn.Sequential(
            nn.Linear(cfg.audio_dim, d), Transformer(cfg, cfg.pooled_len(cfg.audio_len), T, depth)
        )
        self.proj_v = nn.Sequential(
            nn.Linear(cfg.vision_dim, d), Transformer(cfg, cfg.pooled_len(cfg.vision_len), T, depth)
        )
        self.proxy_dominate_modality_generator = Transformer(cfg, 3 * T, T, depth)
        self.effective_discriminator = _mlp_head(d, d // 2, 2, sigmoid=False)
        self.completeness_check = nn.ModuleList(
            [Transformer(cfg, T, 1, depth), _mlp_head(d, d // 2, 1, sigmoid=True)]
        )
        self.reconstructor = nn.ModuleList(Transformer(cfg, T, None, depth) for _ in range(3))
        self.dmml = nn.ModuleList(
            [
                Transformer(cfg, T, None, depth, save_hidden=True),
                HyperModalityLearning(cfg),
                CrossTransformer(cfg, T, T, cfg.fusion_depth),
                nn.Linear(d, cfg.out_dim),
            ]
        )

    # ------------------------------------------------------------------ pieces
    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        window = self.cfg.pool_window(x.shape[1])
        if window == 1:
            return x
        pad = (-x.shape[1]) % window
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        return x.view(x.shape[0], -1, window, x.shape[2]).mean(dim=2)

    def embed(self, x: LNLNInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The T-token embeddings (h_l, h_a, h_v) of one view, each (B, T, d)."""
        T = self.cfg.tokens
        text = self.bertmodel(x.text_ids, x.text_mask, x.text_segments)
        h_l = self.proj_l(text)[:, :T]
        h_a = self.proj_a(self._pool(x.audio))[:, :T]
        h_v = self.proj_v(self._pool(x.vision))[:, :T]
        return h_l, h_a, h_v

    def forward(
        self, incomplete: LNLNInputs, complete: LNLNInputs | None = None
    ) -> dict[str, torch.Tensor]:
        T = self.cfg.tokens
        b = incomplete.audio.shape[0]
        if complete is None:
            h_l, h_a, h_v = self.embed(incomplete)
        else:
            # Both views through the same encoders in one pass (the original runs them one after
            # the other; the encoders are per-sample, so only BERT's dropout draws differ).
            both_l, both_a, both_v = self.embed(LNLNInputs.cat(incomplete, complete))
            h_l, h_a, h_v = both_l[:b], both_a[:b], both_v[:b]
            c_l, c_a, c_v = both_l[b:], both_a[b:], both_v[b:]

        w = self.completeness_check[1](self.completeness_check[0](h_l)[:, 0])  # (B, 1)
        h_p = self.h_p.expand(b, -1, -1)
        proxy = self.proxy_dominate_modality_generator(torch.cat((h_p, h_a, h_v), dim=1))[:, :T]
        # Quirk reproduced: the GRL sits on the prediction path, so every gradient into
        # the proxy generator (the sentiment loss's too) is reversed.
        proxy = grad_reverse(proxy)
        w3 = w.unsqueeze(-1)
        h_d = proxy * (1 - w3) + h_l * w3

        lang_hidden = self.dmml[0](h_d)
        hyper = self.dmml[1](lang_hidden, h_a, h_v, self.h_hyper.expand(b, -1, -1))
        feat = self.dmml[2](hyper, lang_hidden[-1])
        preds = self.dmml[3](feat[:, 1:].mean(dim=1))
        out = {"sentiment_preds": preds, "w": w}
        if complete is not None:
            rec = torch.cat(
                (
                    self.reconstructor[0](h_a),
                    self.reconstructor[1](h_v),
                    self.reconstructor[2](h_l),
                ),
                dim=1,
            )
            # Targets with gradient, not detached, as in the original.
            out["rec_feats"] = rec
            out["complete_feats"] = torch.cat((c_a, c_v, c_l), dim=1)
            # Quirk reproduced: the mixed feature h_d (class 1) against the complete-
            # language tokens (class 0), stacked along the batch and flattened token-wise.
            tokens = torch.cat((h_d, c_l), dim=0).reshape(-1, self.cfg.dim)
            out["effectiveness_discriminator_out"] = self.effective_discriminator(tokens)
        return out
