"""mer_bench adapters for CIDer: ``cider`` (reference numerics) and ``cider_fixed``.

The typed data setting (``ctx.data``) keys the bias-word cache, selects the cross-dataset
prototype encoders (distribution ``cross``, Q-17) and locates shipped prototype files.

Option read from ``ctx.options``:

- ``cider_prototypes``: a directory laid out like the reference checkout
  (``{dataset}_feats/{iid|ood}/{task}/…_{k}.npy`` and ``{dataset}_probs/…``, docs/cider.md);
  when given, the shipped *train* prototypes and prior are used instead of computing them.

Benchmark fix of Q-4: evaluation always uses the mean of the *train* class prototypes for every
stratum and a uniform prior (the reference used the evaluated split's own class means).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cider.bias_words import bias_cache_path, counterfactual_ids, keep_table, load_or_build
from cider.losses import LossWeights, attention_loss, reconstruction_loss, representation_loss
from cider.model import CIDerConfig, CIDerModel, CIDerOutput
from cider.prototypes import (
    Prototypes,
    class_prototypes,
    load_shipped,
    pooled_text_features,
    sample_vectors,
)
from mer_bench.adapters import Adapter, AdapterContext, SearchDim, register_adapter
from mer_bench.batch import Batch, KeepMasks
from mer_bench.corruption import CorruptionKind, TrainCorruption
from mer_bench.data.types import Split
from mer_bench.errors import AdapterError, ConfigError
from mer_bench.protocol import Distribution
from mer_bench.text_encoder import build_text_encoder

TAU_GRID: tuple[float, ...] = tuple(round(k / 10, 1) for k in range(31))
"""CIDer's 31 counterfactual weights τ = 0.0, 0.1, …, 3.0 (the harness selects among them).

Exact one-decimal floats. The reference built the grid with ``np.arange(0, 3.1, 0.1)``, which
yields 0.30000000000000004 and the like; that is float noise only and changes no argmax."""
BERT_PREFIX = "text_model."
NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")

_MODEL_DEFAULTS: dict[str, Any] = {
    "embed_dim": 32,
    "multimodal_layers": 3,
    "num_heads": 8,
    "attn_dropout": 0.0,
    "embed_dropout": 0.2,
    "relu_dropout": 0.1,
    "res_dropout": 0.1,
    # Values as the reference stores them (0.1·3 and 0.1·6 in floating point).
    "out_dropout": 0.30000000000000004,
    "joint_rep_weight": 0.5,
    "attn_weight": 0.1,
    "recon_weight": 0.6000000000000001,
    "bias_thresh": 100,
}

_TENTHS_05 = tuple(round(k / 10, 1) for k in range(6))
_TENTHS_10 = tuple(round(k / 10, 1) for k in range(11))


@register_adapter("cider")
class CIDerAdapter(Adapter):
    """CIDer with the reference's numerics (docs/cider.md).

    Reproduces the reference behaviours (docs/cider.md) that define the method as shipped: batch-indexed positional
    embedding (Q-5), step-1 task gradient carried into step 2 (Q-7), original masks in every
    pass (Q-11), constant compression rows (Q-12), unmasked GRUs/pooling (Q-13), raw-score
    distillation (Q-14), LAV-only attention dropout (Q-15), unused compression modules when
    aligned (Q-16), cross-dataset LayerNorm indices (Q-17) and log without epsilon (Q-18).
    """

    positions_by_time: ClassVar[bool] = False
    log_floor: ClassVar[float | None] = None
    # the positional sinusoid is indexed by batch row, so a sample's scores depend on
    # where it sits in its batch (check-adapter measures it; the fixed form passes).
    batch_coupled: ClassVar[bool] = True

    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        # The reference single-run configuration.
        "default": {
            "batch_size": 128,
            "max_epochs": 200,
            "patience": 10,
            "lr": 1e-3,
            "lr_bert": 5e-5,
            "weight_decay_bert": 1e-3,
            **_MODEL_DEFAULTS,
        },
        # Small and fast for the synthetic benchmark on CPU (tiny BERT comes from the context).
        "synth": {
            "batch_size": 32,
            "max_epochs": 4,
            "patience": 2,
            "lr": 5e-3,
            "lr_bert": 1e-3,
            "weight_decay_bert": 1e-3,
            **_MODEL_DEFAULTS,
            "embed_dim": 16,
            "multimodal_layers": 1,
            "num_heads": 1,
            "embed_dropout": 0.1,
            "out_dropout": 0.1,
            "bias_thresh": 20,
        },
    }
    search_space: ClassVar[Mapping[str, SearchDim]] = {
        "multimodal_layers": SearchDim("int", low=1, high=4, step=1),
        "num_heads": SearchDim("categorical", choices=(1, 2, 4, 8)),
        "attn_dropout": SearchDim("categorical", choices=_TENTHS_05),
        "out_dropout": SearchDim("categorical", choices=_TENTHS_05),
        "embed_dropout": SearchDim("categorical", choices=_TENTHS_05),
        "joint_rep_weight": SearchDim("categorical", choices=_TENTHS_10),
        "attn_weight": SearchDim("categorical", choices=_TENTHS_10),
        "recon_weight": SearchDim("categorical", choices=_TENTHS_10),
    }
    knob_grid: ClassVar[Mapping[str, tuple[float, ...]]] = {"tau": TAU_GRID}
    default_knobs: ClassVar[Mapping[str, float]] = {"tau": 0.0}

    def __init__(self, ctx: AdapterContext) -> None:
        super().__init__(ctx)
        p = ctx.params
        self.weights = LossWeights(
            float(p["joint_rep_weight"]), float(p["attn_weight"]), float(p["recon_weight"])
        )
        self.prototypes: Prototypes | None = None
        self.bias_ids: torch.Tensor | None = None
        self._train_protos: tuple[torch.Tensor, torch.Tensor] | None = None
        self._eval_protos: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cf_table: torch.Tensor | None = None

    # ------------------------------------------------------------------ build
    def build(self) -> nn.Module:
        spec, p = self.ctx.spec, self.ctx.params
        num_classes = self.ctx.task.info.num_classes
        if num_classes is None:
            raise AdapterError("CIDer supports the classification tasks only")
        if spec.aligned and (spec.audio_len != spec.text_len or spec.vision_len != spec.text_len):
            raise AdapterError(
                f"aligned data must have audio/vision length = text length {spec.text_len}, got "
                f"{spec.audio_len}/{spec.vision_len}"
            )
        embed_dim, heads = int(p["embed_dim"]), int(p["num_heads"])
        if embed_dim % heads:
            raise ConfigError(f"num_heads {heads} must divide embed_dim {embed_dim}")
        encoder = build_text_encoder(self.ctx.text_encoder)
        cfg = CIDerConfig(
            text_dim=int(encoder.config.hidden_size),
            audio_dim=spec.audio_dim,
            vision_dim=spec.vision_dim,
            text_len=spec.text_len,
            audio_len=spec.audio_len,
            vision_len=spec.vision_len,
            num_classes=num_classes,
            aligned=spec.aligned,
            cross_dataset=self.ctx.data.distribution is Distribution.CROSS,
            embed_dim=embed_dim,
            num_layers=int(p["multimodal_layers"]),
            num_heads=heads,
            attn_dropout=float(p["attn_dropout"]),
            embed_dropout=float(p["embed_dropout"]),
            relu_dropout=float(p["relu_dropout"]),
            res_dropout=float(p["res_dropout"]),
            out_dropout=float(p["out_dropout"]),
            positions_by_time=self.positions_by_time,
            log_floor=self.log_floor,
        )
        return CIDerModel(cfg, encoder)

    @property
    def cider(self) -> CIDerModel:
        assert isinstance(self.model, CIDerModel)
        return self.model

    # ------------------------------------------------------------------ setup
    def setup(self, train: Split) -> None:
        """Prototypes/prior and the bias-word dictionary from the training split."""
        task = self.ctx.task
        labels = train.labels(task)
        num_classes = int(task.info.num_classes or 0)
        shipped = self.ctx.options.get("cider_prototypes")
        if shipped:
            protos = load_shipped(
                Path(str(shipped)), self.ctx.data, proto_dim=self.cider.cfg.proto_dim
            )
        else:
            pooled = pooled_text_features(
                self.cider.text_model.model, train.text_bert, self.ctx.device
            )
            protos = class_prototypes(sample_vectors(pooled, train), labels, num_classes)
        top_k = int(self.ctx.params["bias_thresh"])
        cache = None
        if self.ctx.cache_dir is not None:
            cache = bias_cache_path(self.ctx.cache_dir, self.ctx.data, top_k)
        words = load_or_build(cache, train.text_ids, labels, num_classes, top_k)
        self._install(protos, torch.as_tensor(words.ids, dtype=torch.int64))

    def _install(self, protos: Prototypes, bias_ids: torch.Tensor) -> None:
        device = self.ctx.device
        if protos.means.shape != (self.cider.cfg.num_classes, self.cider.cfg.proto_dim):
            raise AdapterError(
                f"prototypes have shape {protos.means.shape}, the model expects "
                f"{(self.cider.cfg.num_classes, self.cider.cfg.proto_dim)}"
            )
        self.prototypes = protos
        self.bias_ids = bias_ids.to(device)
        self._train_protos = protos.training_tensors(device)
        self._eval_protos = protos.evaluation_tensors(device)
        vocab = int(self.cider.text_model.model.config.vocab_size)
        self._cf_table = keep_table(self.bias_ids, vocab)

    def _require_setup(self) -> None:
        if self._train_protos is None:
            raise AdapterError("CIDer: setup(train) must run before training or prediction")

    # ------------------------------------------------------------------ training
    def configure_optimizer(self) -> torch.optim.Optimizer:
        """Adam with the reference's three groups: BERT weights (lr_bert, coupled L2
        weight_decay_bert), BERT biases/LayerNorms (lr_bert, no decay), the rest (lr)."""
        p = self.ctx.params
        decay, no_decay, rest = [], [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            if not name.startswith(BERT_PREFIX):
                rest.append(param)
            elif any(tag in name for tag in NO_DECAY):
                no_decay.append(param)
            else:
                decay.append(param)
        lr_bert = float(p["lr_bert"])
        return torch.optim.Adam(
            [
                {"params": decay, "lr": lr_bert, "weight_decay": float(p["weight_decay_bert"])},
                {"params": no_decay, "lr": lr_bert, "weight_decay": 0.0},
                {"params": rest, "lr": float(p["lr"]), "weight_decay": 0.0},
            ]
        )

    def _run(
        self,
        batch: Batch,
        protos: tuple[torch.Tensor, torch.Tensor],
        text_ids: torch.Tensor | None = None,
        reconstruct: bool = False,
        pe_index: torch.Tensor | None = None,
        need_attention: bool = True,
    ) -> CIDerOutput:
        return self.model(
            batch.text_ids if text_ids is None else text_ids,
            batch.text_mask,
            batch.text_segments,
            batch.audio,
            batch.vision,
            batch.audio_mask,
            batch.vision_mask,
            protos[0],
            protos[1],
            reconstruct=reconstruct,
            pe_index=pe_index,
            need_attention=need_attention,
        )

    def training_corruption(self) -> TrainCorruption:
        """CIDer's training RMFM: the reference draws a per-position rate and a per-position
        uniform, which collapses to dropping each valid position with probability 1/2 (Q-8);
        [CLS]/[SEP] are kept."""
        return TrainCorruption(CorruptionKind.RATE, rate=0.5)

    def train_step(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        """Complete-view task step, then the missing-view step with the updated weights.

        ``batch`` is the harness's corrupted view (``training_corruption``) and
        ``batch.complete_view`` the complete one; under clean training both are the same and
        nothing is dropped. The step-1 gradient is deliberately not cleared before step 2 (Q-7),
        so step 2 applies ∇L_task(θ₀) + ∇L(θ₁). Teacher signals come from the step-1 pass
        (θ₀, dropout on).
        """
        self._require_setup()
        assert self._train_protos is not None and self.optimizer is not None
        opt, w = self.optimizer, self.weights
        full = batch.complete_view
        label = full.label.long()
        opt.zero_grad(set_to_none=True)
        complete = self._run(full, self._train_protos)
        F.nll_loss(complete.pred, label).backward()
        opt.step()

        keep = batch.keep or KeepMasks(
            full.text_mask.bool(), full.audio_mask.bool(), full.vision_mask.bool()
        )
        missing = self._run(batch, self._train_protos, reconstruct=True)
        loss = F.nll_loss(missing.pred, label)
        if w.joint_rep:
            loss = loss + w.joint_rep * representation_loss(missing.joint_rep, complete.joint_rep)
        if w.attn:
            loss = loss + w.attn * attention_loss(missing.attn, complete.attn)
        if w.recon:
            assert missing.text_recon is not None
            assert missing.audio_recon is not None and missing.vision_recon is not None
            rec = (
                reconstruction_loss(
                    missing.text_recon, complete.text_hidden.detach(), full.text_mask, keep.text
                )
                + reconstruction_loss(missing.audio_recon, full.audio, full.audio_mask, keep.audio)
                + reconstruction_loss(
                    missing.vision_recon, full.vision, full.vision_mask, keep.vision
                )
            )
            loss = loss + w.recon * rec
        loss.backward()  # accumulates onto the step-1 gradients
        opt.step()
        return loss.detach()

    # ------------------------------------------------------------------ evaluation
    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Missing-view and counterfactual passes (the reference's test mode), run as one batch of 2B
        whose Q-5 positional rows are those of the separate B-sample passes."""
        self._require_setup()
        assert self._eval_protos is not None and self._cf_table is not None
        size = batch.size
        cf = counterfactual_ids(batch.text_ids, self._cf_table)
        # Audio and vision are the same in both views: they are passed once (text_views=2).
        pe_index = torch.arange(size, device=batch.text_ids.device).repeat(2)
        p_protos, p_prior = self._eval_protos
        out = self.model(
            torch.cat((batch.text_ids, cf)),
            batch.text_mask.repeat(2, 1),
            batch.text_segments.repeat(2, 1),
            batch.audio,
            batch.vision,
            batch.audio_mask,
            batch.vision_mask,
            p_protos,
            p_prior,
            pe_index=pe_index,
            need_attention=False,
            text_views=2,
        )
        logp, cf_logp = out.pred.split(size)
        return {"logp": logp, "cf_logp": cf_logp}

    def scores(self, outputs: Mapping[str, np.ndarray], knobs: Mapping[str, float]) -> np.ndarray:
        """Debiased scores log p − τ·log p_cf."""
        tau = float(knobs.get("tau", 0.0))
        return np.asarray(outputs["logp"]) - tau * np.asarray(outputs["cf_logp"])

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, torch.Tensor]:
        if self.prototypes is None or self.bias_ids is None:
            return {}
        return {
            "prototypes": torch.as_tensor(self.prototypes.means, dtype=torch.float64),
            "prior": torch.as_tensor(self.prototypes.prior, dtype=torch.float64),
            "bias_ids": self.bias_ids.detach().cpu().to(torch.int64),
        }

    def load_extra_state(self, state: Mapping[str, torch.Tensor]) -> None:
        missing = {"prototypes", "prior", "bias_ids"} - set(state)
        if missing:
            raise AdapterError(f"CIDer checkpoint lacks extra state: {', '.join(sorted(missing))}")
        protos = Prototypes(
            means=state["prototypes"].double().cpu().numpy(),
            prior=state["prior"].double().cpu().numpy(),
        )
        self._install(protos, state["bias_ids"].to(torch.int64))


@register_adapter("cider_fixed")
class CIDerFixedAdapter(CIDerAdapter):
    """CIDer with two numerical fixes and the same parameters as ``cider``:

    - the positional sinusoid is indexed by time step (not by batch position, Q-5), so outputs
      no longer depend on batch composition;
    - the class mixture is clamped at 1e-12 before the log (Q-18).

    Everything else, including the un-reset gradient between the two steps (Q-7), is as in
    ``cider``.
    """

    positions_by_time: ClassVar[bool] = True
    log_floor: ClassVar[float | None] = 1e-12
    batch_coupled: ClassVar[bool] = False
