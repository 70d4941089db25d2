"""Fit-loop scaffolding: epochs, early stopping on the validation split, best-state selection.

The adapter owns its loss and optimiser steps (``Adapter.train_step``); this loop owns the data
order, the seeds, the device, the validation metric and the patience counter. Selection uses the
*validation* split only (the honest default, docs/architecture.md): the metric is the task's selection
metric under the complete view, taken at the best post-hoc knob on validation (e.g. CIDer's τ).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from mer_bench.adapters import Adapter
from mer_bench.batch import SplitTensors
from mer_bench.corruption import TrainCorruption
from mer_bench.data.types import DatasetBundle
from mer_bench.evaluate import (
    autocast,
    best_knob_score,
    complete_view_keep,
    predict_split,
)
from mer_bench.metrics import improves, worst_value
from mer_bench.protocol import Precision


@dataclass(frozen=True)
class FitConfig:
    """How to train one setting."""

    max_epochs: int
    patience: int
    batch_size: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: Precision = Precision.FP32
    """bf16 means autocast, on CUDA only."""
    eval_batch_size: int | None = None
    """Batch size of the validation passes (None: ``batch_size``)."""

    @classmethod
    def of(
        cls, adapter: Adapter, device: torch.device, precision: Precision = Precision.FP32
    ) -> FitConfig:
        """The adapter's own schedule: epochs, patience and batch sizes from its parameters."""
        params = adapter.ctx.params
        return cls(
            max_epochs=int(params["max_epochs"]),
            patience=int(params["patience"]),
            batch_size=int(params["batch_size"]),
            device=device,
            precision=precision,
            eval_batch_size=adapter.eval_batch_size,
        )


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    valid_metric: float
    seconds: float


@dataclass
class FitResult:
    best_epoch: int
    best_valid: float
    history: list[EpochRecord]
    seconds: float
    state: dict[str, torch.Tensor]
    """Checkpoint state (CPU tensors) of the selected epoch; already loaded into the adapter."""


def _train_batches(data: SplitTensors, cfg: FitConfig, generator: torch.Generator) -> Iterator:
    pin = cfg.device.type == "cuda"
    for batch in data.batches(cfg.batch_size, generator=generator, shuffle=True):
        if pin:
            batch = batch.pin_memory()
        yield batch.to(cfg.device, non_blocking=pin)


def valid_selection_metric(
    adapter: Adapter, valid: SplitTensors, cfg: FitConfig, seed: int
) -> float:
    """The task's selection metric on the complete validation view, best over post-hoc knobs."""
    task = adapter.ctx.task
    keep = complete_view_keep(valid)
    size = cfg.eval_batch_size or cfg.batch_size
    outputs = predict_split(adapter, valid, keep, size, cfg.device, cfg.precision)
    return best_knob_score(adapter, outputs, valid.split.labels(task))


def fit(
    adapter: Adapter,
    bundle: DatasetBundle,
    seed: int,
    cfg: FitConfig,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    corruption: TrainCorruption | None = None,
) -> FitResult:
    """Train with early stopping on validation; leave the best state loaded in the adapter.

    ``corruption`` is the training-time missing data applied to every batch (a pure function of
    (seed, epoch, sample)); None uses the adapter's native recipe.
    """
    if corruption is None:
        corruption = adapter.training_corruption() or TrainCorruption.none()
    task = adapter.ctx.task
    selection_metric = task.info.selection_metric
    train = SplitTensors(bundle.train, task)
    valid = SplitTensors(bundle.valid, task)
    shuffle_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=cfg.device).manual_seed(seed + 1)

    start = time.perf_counter()
    best = worst_value(selection_metric)
    best_epoch = 0
    best_state = adapter.checkpoint_state()
    patience = cfg.patience
    history: list[EpochRecord] = []
    for epoch in range(1, cfg.max_epochs + 1):
        t0 = time.perf_counter()
        adapter.on_epoch_start(epoch)
        adapter.train_mode()
        losses = []
        with autocast(cfg.device, cfg.precision):
            for batch in _train_batches(train, cfg, shuffle_gen):
                losses.append(adapter.train_step(corruption.apply(batch, seed, epoch), aug_gen))
        adapter.on_epoch_end(epoch)
        # One host sync per epoch, not per step.
        train_loss = float(torch.stack([loss.float() for loss in losses]).mean()) if losses else 0.0
        metric = valid_selection_metric(adapter, valid, cfg, seed)
        record = EpochRecord(epoch, train_loss, metric, time.perf_counter() - t0)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if improves(metric, best, selection_metric):
            best, best_epoch = metric, epoch
            best_state = adapter.checkpoint_state()
            patience = cfg.patience
        else:
            patience -= 1
            if patience <= 0:
                break
    adapter.load_checkpoint_state(best_state)
    return FitResult(best_epoch, best, history, time.perf_counter() - start, best_state)
