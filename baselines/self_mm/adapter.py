"""Self-MM as a mer_bench adapter (docs/baselines.md).

Training follows the MMSA trainer: per batch, forward → weighted-L1 loss on the
current label tables → backward → (from epoch 2) ULGM label update → memory write → centre
refresh → optimiser step every ``update_epochs`` batches. Self-MM has no training-time
missing-data augmentation.

Classification tasks (binary = neg/neu/pos, seven). Self-MM is a regression model whose ULGM is
defined on real-valued scores, so only the fusion head changes: it outputs C logits trained with
cross-entropy on the class label. The unimodal heads T, A, V, their tanh weights and the ULGM keep
working on the regression score ``batch.score``; the ULGM's fusion reference y_M is that ground-
truth score (exactly the role ``label_map['fusion']`` plays in the reference, which is never a
model output), and the fusion features F_f still define the fusion centres. So pseudo-labels,
centres and the unimodal losses are identical in kind to the regression setting; the class logits
only replace the M head's L1 term.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from baselines.common.accumulation import GradientGroups
from baselines.common.heads import softmax_rows
from baselines.common.optim import encoder_param_groups
from baselines.common.params import PresetParams
from baselines.self_mm.model import SelfMM, SelfMMConfig
from baselines.self_mm.ulgm import MODES, ULGM
from mer_bench.adapters import Adapter, AdapterContext, SearchDim, register_adapter
from mer_bench.batch import Batch
from mer_bench.data.types import Split
from mer_bench.errors import AdapterError, ConfigError
from mer_bench.protocol import Task

# MMSA's config_regression.json, MOSI. ``lr`` is MMSA's learning_rate_other (the post_*
# layers); the harness keys batch_size / max_epochs / patience / lr are required by every preset.
# The reference epoch loop has no maximum; 100 is only a safety cap (early stopping ends first).
_MMSA_MOSI: dict[str, Any] = {
    "batch_size": 16,
    "max_epochs": 100,
    "patience": 8,
    "lr": 1e-3,
    "update_epochs": 4,
    "learning_rate_bert": 5e-5,
    "learning_rate_audio": 5e-3,
    "learning_rate_video": 5e-3,
    "weight_decay_bert": 1e-3,
    "weight_decay_audio": 1e-3,
    "weight_decay_video": 1e-3,
    "weight_decay_other": 1e-3,
    "a_lstm_hidden_size": 16,
    "v_lstm_hidden_size": 32,
    "a_lstm_layers": 1,
    "v_lstm_layers": 1,
    "a_lstm_dropout": 0.0,
    "v_lstm_dropout": 0.0,
    "audio_out": 16,
    "video_out": 32,
    "post_fusion_dim": 128,
    "post_text_dim": 32,
    "post_audio_dim": 16,
    "post_video_dim": 32,
    "post_fusion_dropout": 0.0,
    "post_text_dropout": 0.1,
    "post_audio_dropout": 0.1,
    "post_video_dropout": 0.0,
    "H": 3.0,
    "exclude_zero": True,
    "packed": True,
}

_MMSA_MOSEI: dict[str, Any] = {
    **_MMSA_MOSI,
    "batch_size": 32,
    "learning_rate_video": 1e-4,
    "weight_decay_audio": 0.0,
    "weight_decay_video": 0.0,
    "weight_decay_other": 1e-2,
    "post_fusion_dropout": 0.1,
    "post_text_dropout": 0.0,
    "post_audio_dropout": 0.0,
    "post_video_dropout": 0.0,
}

# thuiar/Self-MM config_regression.py (the older config). ``excludeZero`` is absent there
# and evaluates to False, so zero labels count as positive.
_ORIG_MOSI: dict[str, Any] = {
    **_MMSA_MOSI,
    "batch_size": 32,
    "learning_rate_audio": 1e-3,
    "learning_rate_video": 1e-4,
    "weight_decay_audio": 1e-2,
    "weight_decay_video": 1e-3,
    "weight_decay_other": 1e-3,
    "a_lstm_hidden_size": 32,
    "v_lstm_hidden_size": 64,
    "post_text_dim": 64,
    "post_fusion_dropout": 0.1,
    "post_text_dropout": 0.0,
    "post_audio_dropout": 0.1,
    "post_video_dropout": 0.1,
    "exclude_zero": False,
}

_ORIG_MOSEI: dict[str, Any] = {
    **_MMSA_MOSI,
    "batch_size": 32,
    "learning_rate_audio": 5e-3,
    "learning_rate_video": 1e-4,
    "weight_decay_audio": 0.0,
    "weight_decay_video": 0.0,
    "weight_decay_other": 1e-2,
    "a_lstm_hidden_size": 32,
    "v_lstm_hidden_size": 32,
    "post_video_dim": 16,
    "post_fusion_dropout": 0.0,
    "post_text_dropout": 0.1,
    "post_audio_dropout": 0.0,
    "post_video_dropout": 0.1,
    "exclude_zero": False,
}

# Small and fast for the synthetic benchmark on CPU: narrow LSTMs and heads, a tiny random BERT
# that needs a larger learning rate than a pretrained one, no accumulation (few batches per
# epoch), and the padded-gather LSTM (same function as packing, much faster on CPU). Four epochs
# so that the ULGM's unimodal supervision (which starts at epoch 3) takes part.
_SYNTH: dict[str, Any] = {
    **_MMSA_MOSI,
    "batch_size": 32,
    # The classification heads sit on a plateau for ~5 epochs on synth before they move.
    "max_epochs": 16,
    "patience": 6,
    "lr": 3e-3,
    "update_epochs": 1,
    "learning_rate_bert": 1e-3,
    "learning_rate_audio": 5e-3,
    "learning_rate_video": 5e-3,
    "a_lstm_hidden_size": 8,
    "v_lstm_hidden_size": 8,
    "audio_out": 8,
    "video_out": 8,
    "post_fusion_dim": 32,
    "post_text_dim": 16,
    "post_audio_dim": 8,
    "post_video_dim": 8,
    "post_text_dropout": 0.0,
    "post_audio_dropout": 0.0,
    "packed": False,
}

# The spec gives no tuning ranges; these span the values of the two reference configs
# with one step either side for widths and a log range around the learning rates.
_SEARCH_SPACE: dict[str, SearchDim] = {
    "batch_size": SearchDim("categorical", choices=(16, 32, 64)),
    "update_epochs": SearchDim("categorical", choices=(1, 2, 4, 8)),
    "learning_rate_bert": SearchDim("float", low=1e-5, high=1e-4, log=True),
    "learning_rate_audio": SearchDim("float", low=1e-4, high=1e-2, log=True),
    "learning_rate_video": SearchDim("float", low=1e-4, high=1e-2, log=True),
    "lr": SearchDim("float", low=1e-4, high=5e-3, log=True),
    "weight_decay_bert": SearchDim("categorical", choices=(0.0, 1e-3, 1e-2)),
    "weight_decay_audio": SearchDim("categorical", choices=(0.0, 1e-3, 1e-2)),
    "weight_decay_video": SearchDim("categorical", choices=(0.0, 1e-3, 1e-2)),
    "weight_decay_other": SearchDim("categorical", choices=(0.0, 1e-3, 1e-2)),
    "a_lstm_hidden_size": SearchDim("categorical", choices=(8, 16, 32, 64)),
    "v_lstm_hidden_size": SearchDim("categorical", choices=(16, 32, 64, 128)),
    "audio_out": SearchDim("categorical", choices=(8, 16, 32)),
    "video_out": SearchDim("categorical", choices=(16, 32, 64)),
    "post_fusion_dim": SearchDim("categorical", choices=(64, 128, 256)),
    "post_text_dim": SearchDim("categorical", choices=(16, 32, 64)),
    "post_audio_dim": SearchDim("categorical", choices=(8, 16, 32)),
    "post_video_dim": SearchDim("categorical", choices=(16, 32, 64)),
    "post_fusion_dropout": SearchDim("float", low=0.0, high=0.3, step=0.1),
    "post_text_dropout": SearchDim("float", low=0.0, high=0.3, step=0.1),
    "post_audio_dropout": SearchDim("float", low=0.0, high=0.3, step=0.1),
    "post_video_dropout": SearchDim("float", low=0.0, high=0.3, step=0.1),
    "H": SearchDim("categorical", choices=(1.0, 3.0)),
    "exclude_zero": SearchDim("categorical", choices=(True, False)),
}


_CONFIG_KEYS: tuple[str, ...] = tuple(
    name
    for name in SelfMMConfig.__dataclass_fields__
    if name not in ("audio_dim", "vision_dim", "fusion_outputs", "aligned")
)


@register_adapter("self_mm")
class SelfMMAdapter(PresetParams, Adapter):
    """Self-MM (Yu et al., AAAI 2021), faithful to MMSA's model and trainer."""

    tasks: ClassVar[tuple[Task, ...]] = (Task.BINARY, Task.SEVEN, Task.REGRESSION)
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "default": _MMSA_MOSI,
        "mosi": _MMSA_MOSI,
        "mosei": _MMSA_MOSEI,
        "orig": _ORIG_MOSI,
        "orig_mosei": _ORIG_MOSEI,
        "synth": _SYNTH,
    }
    search_space: ClassVar[Mapping[str, SearchDim]] = _SEARCH_SPACE

    def __init__(self, ctx: AdapterContext) -> None:
        super().__init__(ctx)
        self.ulgm: ULGM | None = None
        self.epoch = 1
        self._groups = GradientGroups()
        """Accumulation over ``update_epochs`` batches (a trailing incomplete group dropped)."""
        self.last_losses: dict[str, torch.Tensor] = {}
        """Detached per-head losses of the last train_step (M, T, A, V)."""

    # ------------------------------------------------------------------ build
    def build(self) -> nn.Module:
        spec = self.ctx.spec
        classes = self.ctx.task.info.num_classes
        cfg = SelfMMConfig(
            audio_dim=spec.audio_dim,
            vision_dim=spec.vision_dim,
            fusion_outputs=1 if classes is None else int(classes),
            aligned=spec.aligned,
            **{key: type(getattr(SelfMMConfig, key))(self._param(key)) for key in _CONFIG_KEYS},
        )
        if int(self._param("update_epochs")) < 1:
            raise ConfigError("self_mm update_epochs must be >= 1")
        return SelfMM(cfg, self.ctx.text_encoder)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        """Adam with the original's five parameter groups and coupled L2 weight decay."""
        return torch.optim.Adam(encoder_param_groups(self.model, self.ctx.params), foreach=True)

    # ------------------------------------------------------------------ ULGM
    def _feature_dims(self) -> dict[str, int]:
        cfg: SelfMMConfig = self.model.cfg  # type: ignore[assignment]
        return {
            "f": cfg.post_fusion_dim,
            "t": cfg.post_text_dim,
            "a": cfg.post_audio_dim,
            "v": cfg.post_video_dim,
        }

    def setup(self, train: Split) -> None:
        """Memory of one row per training sample; every label table = ground truth."""
        self.ulgm = ULGM(
            train.size,
            self._feature_dims(),
            clamp=float(self._param("H")),
            exclude_zero=bool(self._param("exclude_zero")),
            device=self.ctx.device,
        )
        self.ulgm.init_labels(torch.from_numpy(np.asarray(train.regression_labels)))

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._groups.pending = 0

    def on_epoch_end(self, epoch: int) -> None:
        # The reference never steps a trailing incomplete accumulation group: its gradients are
        # discarded, so flushing here means dropping them.
        self._groups.discard(self.optimizer)

    # ------------------------------------------------------------------ train / predict
    def _forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.model(
            batch.text_ids,
            batch.text_mask,
            batch.text_segments,
            batch.audio,
            batch.audio_lengths,
            batch.vision,
            batch.vision_lengths,
        )

    def train_step(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
        if self.ulgm is None:
            raise AdapterError("self_mm: setup(train) must be called before train_step")
        if self.optimizer is None:
            self.optimizer = self.configure_optimizer()
        ulgm = self.ulgm
        self._groups.start_batch(self.optimizer)
        index = batch.index
        out = self._forward(batch)
        targets = ulgm.targets(index)  # (4, B) labels before this batch's update
        weights = ulgm.loss_weights(index)  # (3, B)
        if self.ctx.task is Task.REGRESSION:
            loss_m = (out["M"] - targets[0]).abs().mean()
        else:
            loss_m = F.cross_entropy(out["M"], batch.label)
        uni = torch.stack((out["T"], out["A"], out["V"]))  # (3, B)
        # Weight 0 still yields zero gradient *tensors*, so Adam's coupled L2 moves the
        # unimodal heads during epochs 1–2 exactly as in the reference.
        loss_uni = (weights * (uni - targets[1:]).abs()).mean(dim=1)  # (3,)
        loss = loss_m + loss_uni.sum()
        loss.backward()

        feats = {m: out[f"Feature_{m}"].detach() for m in MODES}
        if self.epoch > 1:
            ulgm.update_labels(index, feats, self.epoch)
        ulgm.write_features(index, feats)
        ulgm.update_centres()

        self._groups.end_batch(self.optimizer, int(self.ctx.params["update_epochs"]))
        self.last_losses = {
            "M": loss_m.detach(),
            "T": loss_uni[0].detach(),
            "A": loss_uni[1].detach(),
            "V": loss_uni[2].detach(),
        }
        return loss.detach()

    def predict(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self._forward(batch)
        return {"M": out["M"], "T": out["T"], "A": out["A"], "V": out["V"]}

    def scores(self, outputs: Mapping[str, np.ndarray], knobs: Mapping[str, float]) -> np.ndarray:
        """(N,) fusion score for regression; (N, C) softmax probabilities otherwise."""
        m = np.asarray(outputs["M"], dtype=np.float64)
        if self.ctx.task is Task.REGRESSION:
            return m.reshape(-1)
        return softmax_rows(m)

    # ------------------------------------------------------------------ checkpoint
    def extra_state(self) -> dict[str, torch.Tensor]:
        """The ULGM's memory, pseudo-labels and centres (needed to resume training)."""
        if self.ulgm is None:
            return {}
        return {f"ulgm.{k}": v for k, v in self.ulgm.state().items()}

    def load_extra_state(self, state: Mapping[str, torch.Tensor]) -> None:
        ulgm_state = {k[len("ulgm.") :]: v for k, v in state.items() if k.startswith("ulgm.")}
        if not ulgm_state:
            return
        if self.ulgm is None:
            self.ulgm = ULGM.from_state(
                ulgm_state,
                clamp=float(self._param("H")),
                exclude_zero=bool(self._param("exclude_zero")),
                device=self.ctx.device,
            )
        else:
            self.ulgm.load_state(ulgm_state)
