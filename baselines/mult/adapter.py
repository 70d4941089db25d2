"""MulT as a mer_bench adapter, trained the way MMSA's MulT trainer does where it matters.

Reproduced from MMSA (``trains/singleTask/MULT.py``, docs/baselines.md):

- Adam over every parameter with ``lr`` and no weight decay (MMSA ignores its weight_decay);
- gradient accumulation over ``update_epochs`` mini-batches: the batch-mean losses are
  back-propagated and *summed*, clip-by-value ``grad_clip`` is applied to the running
  accumulated gradient after every backward, the optimiser steps after each full group, and an
  incomplete trailing group is discarded when the next epoch starts;
- ``grad_clip == -1`` disables clipping as in MMSA; ``clip_mode="norm"`` gives ORIG's
  clip-by-global-L2-norm instead (presets ``orig``/``paper*``);
- L1 loss for regression, cross-entropy for the binary (3-class) and seven-class heads;
- no training-time missing-data augmentation (MulT has none).

Simplifications, stated honestly:

- No ReduceLROnPlateau: the adapter contract gives no validation loss to the model, so the
  learning rate stays constant (with MMSA's MOSI patience 5 and early stop 8 the reference can
  cut the lr at most once or twice before stopping).
- Early stopping and checkpoint choice are the harness's, on the task's validation selection
  metric (MAE for regression: MMSA uses the mean of per-batch L1 means, a negligible
  difference; accuracy for the classification tasks), with a finite ``max_epochs`` where MMSA
  has no cap and ORIG/paper train a fixed number of epochs (``patience = max_epochs`` there).
- MMSA-v1's stepping bug (an optimiser step after every batch on the running accumulated
  gradient) is not reproduced; ``mmsa_v1_mosi`` uses v1's hyperparameters with correct
  accumulation.
- With ``use_bert`` the BERT is fine-tuned with the same Adam and lr as the rest.
- ``downsample_to`` (synth preset only; 0 = off everywhere else) sets a conv stride
  ceil(T_m / downsample_to) on audio/vision so that 375/500-frame unaligned streams cost about
  as much as aligned ones on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from baselines.common.accumulation import GradientGroups
from baselines.common.heads import TASK_LOSS, head_loss, head_outputs, softmax_scores
from baselines.mult.model import MODALITIES, BertTextEncoder, MulT, MulTConfig
from mer_bench.adapters import Adapter, AdapterContext, SearchDim, register_adapter
from mer_bench.batch import Batch
from mer_bench.errors import ConfigError, DataError
from mer_bench.protocol import Task
from mer_bench.text_encoder import build_text_encoder

# MMSA config_regression.json, MulT, MOSI (current master; docs/baselines.md).
_MMSA_MOSI: dict[str, Any] = {
    "batch_size": 16,
    "max_epochs": 200,
    "patience": 8,
    "lr": 2e-3,
    "update_epochs": 8,
    "grad_clip": 0.6,
    "clip_mode": "value",
    "use_bert": False,
    "d_model": 50,
    "num_heads": 10,
    "nlevels": 4,
    "conv_kernel_l": 5,
    "conv_kernel_a": 5,
    "conv_kernel_v": 5,
    "text_dropout": 0.5,
    "embed_dropout": 0.2,
    "attn_dropout": 0.3,
    "attn_dropout_a": 0.2,
    "attn_dropout_v": 0.0,
    "relu_dropout": 0.0,
    "res_dropout": 0.0,
    "output_dropout": 0.5,
    "attn_mask": True,
    "pos_embedding": False,
    "downsample_to": 0,
}

_MMSA_MOSEI: dict[str, Any] = {
    **_MMSA_MOSI,
    "batch_size": 4,
    "lr": 5e-4,
    "d_model": 30,
    "num_heads": 6,
    "conv_kernel_l": 5,
    "conv_kernel_a": 1,
    "conv_kernel_v": 3,
    "text_dropout": 0.3,
    "embed_dropout": 0.0,
    "attn_dropout": 0.4,
    "attn_dropout_a": 0.0,
    "attn_dropout_v": 0.0,
}

# MMSA-v1 (Feb 2021) MOSI config: the one behind MMSA's published MulT row (docs/baselines.md).
_MMSA_V1_MOSI: dict[str, Any] = {
    **_MMSA_MOSI,
    "batch_size": 4,
    "lr": 1e-3,
    "grad_clip": 0.8,
    "d_model": 40,
    "num_heads": 10,
    "conv_kernel_l": 1,
    "conv_kernel_a": 5,
    "conv_kernel_v": 1,
    "text_dropout": 0.2,
    "embed_dropout": 0.1,
    "attn_dropout": 0.1,
    "attn_dropout_a": 0.1,
    "attn_dropout_v": 0.2,
    "relu_dropout": 0.2,
    "res_dropout": 0.2,
    "output_dropout": 0.1,
    "pos_embedding": True,
}

# ORIG main.py defaults: d=30 and k=1 are hard-coded there; text dropout reuses embed_dropout.
_ORIG: dict[str, Any] = {
    **_MMSA_MOSI,
    "batch_size": 24,
    "max_epochs": 40,
    "patience": 40,
    "lr": 1e-3,
    "update_epochs": 1,
    "grad_clip": 0.8,
    "clip_mode": "norm",
    "d_model": 30,
    "num_heads": 5,
    "nlevels": 5,
    "conv_kernel_l": 1,
    "conv_kernel_a": 1,
    "conv_kernel_v": 1,
    "text_dropout": 0.25,
    "embed_dropout": 0.25,
    "attn_dropout": 0.1,
    "attn_dropout_a": 0.0,
    "attn_dropout_v": 0.0,
    "relu_dropout": 0.1,
    "res_dropout": 0.1,
    "output_dropout": 0.0,
    "pos_embedding": True,
}

# Paper Table 5 (MOSI). Items the table leaves out keep ORIG's defaults; its single
# "crossmodal attention block dropout" is applied to all three sources, and its text
# embedding dropout is ORIG's embed_dropout (used for the text input and the encoders).
_PAPER_MOSI: dict[str, Any] = {
    **_ORIG,
    "batch_size": 128,
    "max_epochs": 100,
    "patience": 100,
    "d_model": 40,
    "num_heads": 10,
    "nlevels": 4,
    "conv_kernel_l": 1,
    "conv_kernel_a": 3,
    "conv_kernel_v": 3,
    "text_dropout": 0.2,
    "embed_dropout": 0.2,
    "attn_dropout": 0.2,
    "attn_dropout_a": 0.2,
    "attn_dropout_v": 0.2,
    "output_dropout": 0.1,
}

_PAPER_MOSEI: dict[str, Any] = {
    **_PAPER_MOSI,
    "batch_size": 16,
    "max_epochs": 20,
    "patience": 20,
    "num_heads": 8,
    "text_dropout": 0.3,
    "embed_dropout": 0.3,
    "attn_dropout": 0.1,
    "attn_dropout_a": 0.1,
    "attn_dropout_v": 0.1,
    "grad_clip": 1.0,
}

# Small and fast for the synthetic benchmark on a 2-core CPU (see the module docstring).
_SYNTH: dict[str, Any] = {
    **_MMSA_MOSI,
    "batch_size": 64,
    "max_epochs": 5,
    "patience": 2,
    "lr": 5e-3,
    "update_epochs": 1,
    "grad_clip": 0.6,
    "d_model": 8,
    "num_heads": 2,
    "nlevels": 1,
    "conv_kernel_l": 3,
    "conv_kernel_a": 3,
    "conv_kernel_v": 3,
    "text_dropout": 0.1,
    "embed_dropout": 0.1,
    "attn_dropout": 0.0,
    "attn_dropout_a": 0.0,
    "attn_dropout_v": 0.0,
    "output_dropout": 0.1,
    "downsample_to": 32,
    # Predictions do not depend on the batch; evaluation in bigger batches only saves time.
    "eval_batch_size": 256,
}


@register_adapter("mult")
class MulTAdapter(Adapter):
    """MulT (MMSA's unaligned-capable variant, no CTC) with regression and class heads."""

    tasks: ClassVar[tuple[Task, ...]] = (Task.BINARY, Task.SEVEN, Task.REGRESSION)
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "default": _MMSA_MOSI,
        "mosi": _MMSA_MOSI,
        "mosei": _MMSA_MOSEI,
        "mmsa_v1_mosi": _MMSA_V1_MOSI,
        "orig": _ORIG,
        "paper": _PAPER_MOSI,
        "paper_mosei": _PAPER_MOSEI,
        "synth": _SYNTH,
    }
    # Ranges bracket the MMSA and paper values above; every d is divisible by every head
    # count, so any draw builds.
    search_space: ClassVar[Mapping[str, SearchDim]] = {
        "lr": SearchDim("float", 1e-4, 5e-3, log=True),
        "batch_size": SearchDim("categorical", choices=(16, 32, 64)),
        "d_model": SearchDim("categorical", choices=(30, 40, 50)),
        "num_heads": SearchDim("categorical", choices=(5, 10)),
        "nlevels": SearchDim("int", 2, 6, step=2),
        "conv_kernel_l": SearchDim("categorical", choices=(1, 3, 5)),
        "conv_kernel_a": SearchDim("categorical", choices=(1, 3, 5)),
        "conv_kernel_v": SearchDim("categorical", choices=(1, 3, 5)),
        "text_dropout": SearchDim("float", 0.0, 0.5, step=0.1),
        "embed_dropout": SearchDim("float", 0.0, 0.4, step=0.1),
        "attn_dropout": SearchDim("float", 0.0, 0.4, step=0.1),
        "attn_dropout_a": SearchDim("float", 0.0, 0.4, step=0.1),
        "attn_dropout_v": SearchDim("float", 0.0, 0.4, step=0.1),
        "relu_dropout": SearchDim("float", 0.0, 0.3, step=0.1),
        "res_dropout": SearchDim("float", 0.0, 0.3, step=0.1),
        "output_dropout": SearchDim("float", 0.0, 0.5, step=0.1),
        "grad_clip": SearchDim("categorical", choices=(0.6, 0.8, 1.0)),
    }

    def __init__(self, ctx: AdapterContext) -> None:
        super().__init__(ctx)
        self._loss = TASK_LOSS[ctx.task]()
        self._groups = GradientGroups()
        """Accumulation over ``update_epochs`` batches (MMSA's grouping; see on_epoch_start)."""

    # ------------------------------------------------------------------------- build
    def model_config(self, text_dim: int) -> MulTConfig:
        """The ``MulTConfig`` for this context's spec, task and parameters."""
        p, spec = self.ctx.params, self.ctx.spec
        lengths = {"l": spec.text_len, "a": spec.audio_len, "v": spec.vision_len}
        target = int(p["downsample_to"])
        if target < 0:
            raise ConfigError(f"mult: downsample_to must be >= 0 (0 = off), got {target}")
        # Text stays at full resolution: it is short, and BERT-aligned.
        strides = {
            m: 1 if target == 0 or m == "l" else max(1, math.ceil(lengths[m] / target))
            for m in MODALITIES
        }
        out_dim = self.ctx.task.info.num_classes or 1
        try:
            config = MulTConfig(
                text_dim=text_dim,
                audio_dim=spec.audio_dim,
                vision_dim=spec.vision_dim,
                out_dim=out_dim,
                d_model=int(p["d_model"]),
                num_heads=int(p["num_heads"]),
                nlevels=int(p["nlevels"]),
                kernel_l=int(p["conv_kernel_l"]),
                kernel_a=int(p["conv_kernel_a"]),
                kernel_v=int(p["conv_kernel_v"]),
                stride_l=strides["l"],
                stride_a=strides["a"],
                stride_v=strides["v"],
                text_dropout=float(p["text_dropout"]),
                embed_dropout=float(p["embed_dropout"]),
                attn_dropout=float(p["attn_dropout"]),
                attn_dropout_a=float(p["attn_dropout_a"]),
                attn_dropout_v=float(p["attn_dropout_v"]),
                relu_dropout=float(p["relu_dropout"]),
                res_dropout=float(p["res_dropout"]),
                output_dropout=float(p["output_dropout"]),
                attn_mask=bool(p["attn_mask"]),
                pos_embedding=bool(p["pos_embedding"]),
            )
        except ValueError as exc:
            raise ConfigError(f"mult: {exc}") from None
        for m in MODALITIES:
            if config.kernel(m) < 1 or config.projected_len(m, lengths[m]) < 1:
                raise ConfigError(
                    f"mult: conv_kernel_{m}={config.kernel(m)} does not fit sequences of "
                    f"length {lengths[m]}"
                )
        return config

    def build(self) -> nn.Module:
        p = self.ctx.params
        if str(p["clip_mode"]) not in ("value", "norm"):
            raise ConfigError(f"mult: clip_mode must be 'value' or 'norm', got {p['clip_mode']!r}")
        if int(p["update_epochs"]) < 1:
            raise ConfigError(f"mult: update_epochs must be >= 1, got {p['update_epochs']}")
        text_model = None
        if bool(p["use_bert"]):
            text_model = BertTextEncoder(build_text_encoder(self.ctx.text_encoder))
            text_dim = text_model.hidden_size
        elif self.ctx.spec.text_feat_dim is None:
            raise ConfigError(
                "mult: the data has no precomputed text features ('text'); set use_bert=true"
            )
        else:
            text_dim = int(self.ctx.spec.text_feat_dim)
        return MulT(self.model_config(text_dim), text_model)

    # ------------------------------------------------------------------------- training
    def configure_optimizer(self) -> torch.optim.Optimizer:
        # MMSA: plain Adam over every parameter, no weight decay. The fused kernel computes the
        # same update several times faster for MulT's ~200 small tensors.
        return torch.optim.Adam(
            [q for q in self.model.parameters() if q.requires_grad],
            lr=float(self.ctx.params["lr"]),
            fused=True,
        )

    def _forward(self, batch: Batch) -> torch.Tensor:
        if bool(self.ctx.params["use_bert"]):
            text = batch.text_bert
        elif batch.text_feats is None:
            raise DataError("mult: batch has no precomputed text features; set use_bert=true")
        else:
            text = batch.text_feats
        return self.model(text, batch.audio, batch.vision)["M"]

    def on_epoch_start(self, epoch: int) -> None:
        # MMSA zeroes the gradient at the start of each group; a trailing incomplete group of
        # the previous epoch is therefore dropped without a step (docs/baselines.md).
        self._groups.pending = 0
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)

    def train_step(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        assert self.optimizer is not None, "the harness creates the optimiser before training"
        p = self.ctx.params
        self._groups.start_batch(self.optimizer)
        output = self._forward(batch)
        loss = head_loss(self._loss, self.ctx.task, output, batch.label)
        loss.backward()
        clip = float(p["grad_clip"])
        if clip != -1.0:
            params = [q for q in self.model.parameters() if q.grad is not None]
            if p["clip_mode"] == "value":
                nn.utils.clip_grad_value_(params, clip)
            else:
                nn.utils.clip_grad_norm_(params, clip)
        self._groups.end_batch(self.optimizer, int(p["update_epochs"]))
        return loss.detach()

    # ------------------------------------------------------------------------- evaluation
    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        return head_outputs(self.ctx.task, self._forward(batch))

    def scores(self, outputs: Mapping[str, np.ndarray], knobs: Mapping[str, float]) -> np.ndarray:
        return softmax_scores(self.ctx.task, outputs)
