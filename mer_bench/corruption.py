"""Training-time missing data: which valid positions of a training batch a model never sees.

The harness owns it, like the evaluation masks: an adapter *declares* its native recipe
(``Adapter.training_corruption``) and the fit loop applies it, handing ``train_step`` the corrupted
batch with the complete view attached (``batch.complete_view``, the target of restoration
objectives). A model therefore never knows which training regime produced its batch.

Masks are a pure function of (seed, epoch, sample index): the same for any batch size, order,
worker count or device. Dropped text tokens become [UNK] with [CLS]/[SEP] kept, dropped audio and
vision frames become zeros, padding stays padding (exactly ``Batch.with_missing``).

Kinds:

``none``     complete data.
``rate``     every valid position of every modality dropped independently with probability
             ``rate`` (EMT-DLFR's and TFR-Net's fixed-rate training).
``mixture``  per (sample, modality): complete with probability ``p_complete``, otherwise a rate
             drawn from U(0, ``r_max``) and each valid position dropped with that probability
             (LNLN's training recipe, and the harness's model-agnostic augmentation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch

from mer_bench.batch import Batch, KeepMasks
from mer_bench.errors import ConfigError
from mer_bench.missing import keep_by_rates, training_uniforms
from mer_bench.protocol import Regime, TrainingRegime

__all__ = ["CorruptionKind", "TrainCorruption", "for_regime"]

_TEXT, _AUDIO, _VISION, _RATE, _COMPLETE = 1, 2, 3, 4, 5


class CorruptionKind(str, Enum):
    NONE = "none"
    RATE = "rate"
    MIXTURE = "mixture"


@dataclass(frozen=True)
class TrainCorruption:
    """One training-time missing-data recipe (see the module docstring)."""

    kind: CorruptionKind
    rate: float = 0.0
    """``rate``: drop probability of each valid position."""
    p_complete: float = 0.0
    """``mixture``: probability that a sample's modality stays complete."""
    r_max: float = 1.0
    """``mixture``: otherwise its rate is drawn from U(0, r_max)."""
    per_epoch: bool = True
    """Redraw every epoch; False keeps one draw for the whole run (the originals' fixed masks)."""
    fixed_seed: int | None = None
    """Draw with this seed instead of the run's (the same masks for every seed of a grid)."""

    def __post_init__(self) -> None:
        kind = CorruptionKind(self.kind)
        object.__setattr__(self, "kind", kind)
        for name in ("rate", "p_complete", "r_max"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ConfigError(f"training corruption {name} must lie in [0, 1], got {value!r}")
            object.__setattr__(self, name, value)

    @classmethod
    def none(cls) -> TrainCorruption:
        return cls(CorruptionKind.NONE)

    @property
    def label(self) -> str:
        """A short stable description, e.g. ``rate(0.3)`` or ``mixture(p_complete=0.5,r_max=1)``."""
        if self.kind is CorruptionKind.NONE:
            text = "none"
        elif self.kind is CorruptionKind.RATE:
            text = f"rate({self.rate:g})"
        else:
            text = f"mixture(p_complete={self.p_complete:g},r_max={self.r_max:g})"
        if not self.per_epoch:
            text += "+fixed"
        if self.fixed_seed is not None:
            text += f"+seed{self.fixed_seed}"
        return text

    def keep_masks(self, batch: Batch, seed: int, epoch: int) -> KeepMasks | None:
        """Keep-masks of this batch at ``epoch`` (1-based), or None for complete data."""
        if self.kind is CorruptionKind.NONE:
            return None
        seed = self.fixed_seed if self.fixed_seed is not None else seed
        epoch = epoch if self.per_epoch else 0
        index = batch.index.to(batch.text_mask.device)
        b = index.shape[0]
        if self.kind is CorruptionKind.RATE:
            rates = torch.full((b, 3), self.rate, dtype=torch.float64, device=index.device)
        else:
            drawn = training_uniforms(seed, epoch, _RATE, index, 3) * self.r_max
            stays = training_uniforms(seed, epoch, _COMPLETE, index, 3) <= self.p_complete
            rates = torch.where(stays, torch.zeros_like(drawn), drawn)
        uniforms = tuple(
            training_uniforms(seed, epoch, stream, index, mask.shape[1])
            for stream, mask in (
                (_TEXT, batch.text_mask),
                (_AUDIO, batch.audio_mask),
                (_VISION, batch.vision_mask),
            )
        )
        return keep_by_rates(
            index, batch.text_mask, batch.audio_mask, batch.vision_mask, rates, uniforms
        )

    def apply(self, batch: Batch, seed: int, epoch: int) -> Batch:
        """The training view of a complete batch: corrupted, with ``complete`` attached."""
        keep = self.keep_masks(batch, seed, epoch)
        return batch if keep is None else batch.with_missing(keep)


def for_regime(regime: TrainingRegime, native: TrainCorruption | None) -> TrainCorruption:
    """The corruption a training regime applies; ``native`` is the adapter's own recipe."""
    if regime.kind is Regime.CLEAN:
        return TrainCorruption.none()
    if regime.kind is Regime.NATIVE:
        return native or TrainCorruption.none()
    if regime.kind is Regime.MIXTURE:
        return TrainCorruption(
            CorruptionKind.MIXTURE, p_complete=regime.p_complete, r_max=regime.r_max
        )
    if regime.rate is None:
        raise ConfigError("a matched-regime setting needs its training rate")
    return TrainCorruption(CorruptionKind.RATE, rate=regime.rate)
