"""Training-time corruption: a pure function of (seed, epoch, sample), applied by the fit loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mer_bench.adapters import AdapterContext
from mer_bench.batch import Batch, SplitTensors
from mer_bench.corruption import CorruptionKind, TrainCorruption
from mer_bench.data.types import CLS_ID, SEP_ID, UNK_ID, DataSpec
from mer_bench.errors import ConfigError
from mer_bench.protocol import Task
from tests.cider.helpers import make_split

SPLIT = make_split(64, n=12, audio_len=20, vision_len=16)
DATA = SplitTensors(SPLIT, Task.BINARY)
MIXTURE = TrainCorruption(CorruptionKind.MIXTURE, p_complete=0.5, r_max=1.0)


def _keep(c: TrainCorruption, batch: Batch, seed: int = 7, epoch: int = 1) -> np.ndarray:
    keep = c.keep_masks(batch, seed, epoch)
    assert keep is not None
    return torch.cat((keep.text, keep.audio, keep.vision), dim=1).numpy()


@pytest.mark.parametrize("c", [TrainCorruption(CorruptionKind.RATE, rate=0.4), MIXTURE])
def test_masks_do_not_depend_on_batching_or_order(c: TrainCorruption) -> None:
    whole = _keep(c, DATA.batch(torch.arange(64)))
    order = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    for size in (1, 5, 64):
        for start in range(0, 64, size):
            idx = order[start : start + size]
            assert np.array_equal(_keep(c, DATA.batch(idx)), whole[idx.numpy()])


def test_epoch_seed_and_fixed_draws() -> None:
    batch = DATA.batch(torch.arange(64))
    e1, e2 = _keep(MIXTURE, batch, epoch=1), _keep(MIXTURE, batch, epoch=2)
    assert not np.array_equal(e1, e2)
    assert not np.array_equal(e1, _keep(MIXTURE, batch, seed=8))
    fixed = TrainCorruption(CorruptionKind.MIXTURE, p_complete=0.5, per_epoch=False)
    assert np.array_equal(_keep(fixed, batch, epoch=1), _keep(fixed, batch, epoch=9))
    pinned = TrainCorruption(CorruptionKind.RATE, rate=0.5, fixed_seed=0)
    assert np.array_equal(_keep(pinned, batch, seed=1), _keep(pinned, batch, seed=2))


def test_rate_extremes_and_the_corrupted_view() -> None:
    batch = DATA.batch(torch.arange(64))
    none = TrainCorruption(CorruptionKind.RATE, rate=0.0).apply(batch, 1, 1)
    assert torch.equal(none.text_ids, batch.text_ids) and torch.equal(none.audio, batch.audio)
    out = TrainCorruption(CorruptionKind.RATE, rate=1.0).apply(batch, 1, 1)
    assert out.complete_view is batch and batch.complete_view is batch
    assert out.keep is not None
    # Only [CLS] and [SEP] survive; every other valid token is [UNK]; padding stays [PAD].
    valid = batch.text_mask.bool()
    specials = (batch.text_ids == CLS_ID) | (batch.text_ids == SEP_ID)
    assert torch.equal(out.keep.text, specials & valid)
    assert torch.all(out.text_ids[valid & ~specials] == UNK_ID)
    assert torch.all(out.text_ids[~valid] == 0)
    assert float(out.audio.abs().sum()) == 0.0 and float(out.vision.abs().sum()) == 0.0
    assert TrainCorruption.none().apply(batch, 1, 1) is batch


def test_rate_and_mixture_statistics() -> None:
    big = SplitTensors(make_split(3000, n=12, audio_len=40, vision_len=30), Task.BINARY)
    batch = big.batch(torch.arange(3000))
    keep = TrainCorruption(CorruptionKind.RATE, rate=0.3).keep_masks(batch, 1, 1)
    assert keep is not None
    dropped = 1 - keep.audio.sum() / batch.audio_mask.sum()
    assert abs(float(dropped) - 0.3) < 0.01
    keep = MIXTURE.keep_masks(batch, 1, 1)
    assert keep is not None
    per_sample = keep.audio.sum(1) / batch.audio_mask.sum(1)
    complete = per_sample == 1
    assert abs(float(complete.float().mean()) - 0.5) < 0.04
    # The others draw a rate ~ U(0, 1): their kept fraction averages 1/2 and spreads widely.
    rest = per_sample[~complete]
    assert abs(float(rest.mean()) - 0.5) < 0.04 and float(rest.std()) > 0.2
    half = TrainCorruption(CorruptionKind.MIXTURE, p_complete=0.0, r_max=0.2).keep_masks(
        batch, 1, 1
    )
    assert half is not None
    kept = half.vision.sum(1) / batch.vision_mask.sum(1)
    assert abs(float(kept.mean()) - 0.9) < 0.01  # rates ~ U(0, 0.2): mean drop 0.1


def test_invalid_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        TrainCorruption(CorruptionKind.RATE, rate=1.5)
    with pytest.raises(ConfigError):
        TrainCorruption(CorruptionKind.MIXTURE, p_complete=float("nan"))
    assert MIXTURE.label == "mixture(p_complete=0.5,r_max=1)"


def test_fit_hands_the_adapter_corrupted_batches_with_the_complete_view() -> None:
    from mer_bench.train import FitConfig, fit
    from tests.test_train_evaluate import SPEC, ScriptedEpochs, _adapter, _bundle

    seen: list[Batch] = []
    rate_half = TrainCorruption(CorruptionKind.RATE, rate=0.5)

    class Recording(ScriptedEpochs):
        def training_corruption(self) -> TrainCorruption:
            return rate_half

        def train_step(self, batch: Batch, generator: torch.Generator) -> torch.Tensor:
            seen.append(batch)
            return super().train_step(batch, generator)

    assert SPEC.aligned
    adapter = _adapter(Recording)
    cfg = FitConfig(max_epochs=2, patience=5, batch_size=8)
    fit(adapter, _bundle(), 5, cfg)
    assert len(seen) == 6  # 24 samples, batch 8, two epochs
    for epoch, b in zip((1, 1, 1, 2, 2, 2), seen):
        assert b.keep is not None and b.complete is not None
        expected = rate_half.keep_masks(b.complete_view, 5, epoch)
        assert expected is not None and torch.equal(expected.audio, b.keep.audio)
    # Epoch 1 and 2 draw different masks for the same samples.
    first = {int(i): k for b in seen[:3] for i, k in zip(b.index, b.keep.audio)}
    second = {int(i): k for b in seen[3:] for i, k in zip(b.index, b.keep.audio)}
    assert any(not torch.equal(first[i], second[i]) for i in first)
    seen.clear()
    fit(adapter, _bundle(), 5, FitConfig(1, 5, 8), corruption=TrainCorruption.none())
    assert seen and all(b.keep is None and b.complete_view is b for b in seen)


def test_context_must_agree_with_its_spec() -> None:
    from mer_bench.errors import AdapterError
    from mer_bench.protocol import Alignment, Dataset, DataSetting, Distribution

    spec = DataSpec.from_split(SPLIT, False, Task.BINARY)
    ctx = AdapterContext.create(spec, {})
    assert ctx.task is Task.BINARY and ctx.data.alignment is Alignment.UNALIGNED
    wrong = DataSetting(Dataset.MOSI, Distribution.IID, Alignment.ALIGNED, Task.BINARY)
    with pytest.raises(AdapterError, match="does not match"):
        AdapterContext.create(spec, {}, data=wrong)
