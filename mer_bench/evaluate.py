"""Evaluation of a trained adapter in a protocol cell, with honest post-hoc knob selection.

For each cell the harness builds the split's keep-masks once (``mer_bench.missing``: identical for
every model under the same seed), runs the adapter on the missing view batch by batch, and turns
raw outputs into scores under the adapter's knobs (CIDer's τ). Three selections are computed
whenever an adapter has knobs, and all are stored:

- ``valid``: the knob maximising the task's selection metric on the validation split under the
  same cell, applied to test (the default, docs/architecture.md);
- ``default``: the knob value that means "no adjustment" (τ = 0);
- ``test-oracle``: each metric maximised over the knob on test labels (the paper's protocol,
  docs/cider.md, Q-3), labelled as such everywhere.

Models without knobs get one selection, ``none``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from mer_bench.adapters import Adapter
from mer_bench.batch import KeepMasks, SplitTensors
from mer_bench.metrics import (
    best_value,
    compute_metrics,
    compute_metrics_stack,
    oracle_per_metric,
    select_knob,
)
from mer_bench.missing import split_keep_masks
from mer_bench.protocol import Cell, MaskRng, Precision, TauSelection, parse_enum

SELECTION_NONE = "none"
SELECTION_VALID = TauSelection.VALID.value
SELECTION_DEFAULT = "default"
SELECTION_ORACLE = TauSelection.TEST_ORACLE.value


def complete_view_keep(data: SplitTensors) -> KeepMasks:
    """Keep-masks that keep every valid position (the complete view as a 'missing' view)."""
    split = data.split
    n = split.text_bert.shape[2]
    la, lv = split.audio.shape[1], split.vision.shape[1]
    steps = {length: torch.arange(length) for length in {n, la, lv}}
    return KeepMasks(
        torch.from_numpy(split.text_mask != 0),
        steps[la].unsqueeze(0) < torch.from_numpy(split.audio_lengths).unsqueeze(1),
        steps[lv].unsqueeze(0) < torch.from_numpy(split.vision_lengths).unsqueeze(1),
    )


def cell_keep(data: SplitTensors, cell: Cell, seed: int, mask_rng: MaskRng | str) -> KeepMasks:
    """The split's keep-masks for a cell (a pure function of seed, mode, sample, rate)."""
    split = data.split
    return split_keep_masks(
        cell.mode,
        rate=cell.rate,
        condition=cell.condition,
        seed=seed,
        text_mask=split.text_mask,
        audio_lengths=split.audio_lengths,
        vision_lengths=split.vision_lengths,
        audio_len=split.audio.shape[1],
        vision_len=split.vision.shape[1],
        rng=mask_rng,
    )


def autocast(device: torch.device, precision: Precision | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked; a no-op otherwise (CPU is the tested path)."""
    if parse_enum(Precision, precision, "precision") is Precision.BF16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def predict_split(
    adapter: Adapter,
    data: SplitTensors,
    keep: KeepMasks | None,
    batch_size: int,
    device: torch.device,
    precision: Precision | str = Precision.FP32,
) -> dict[str, np.ndarray]:
    """Run ``adapter.predict`` over a split in order (unshuffled; CIDer Q-5 depends on it)."""
    adapter.model.eval()
    collected: dict[str, list[torch.Tensor]] = {}
    pin = device.type == "cuda"
    # inference_mode, not just no_grad: no autograd bookkeeping (version counters, views).
    with torch.inference_mode(), autocast(device, precision):
        for start in range(0, data.size, batch_size):
            index = torch.arange(start, min(start + batch_size, data.size))
            batch = data.batch(index)
            if keep is not None:
                batch = batch.with_missing(
                    KeepMasks(keep.text[index], keep.audio[index], keep.vision[index])
                )
            if pin:
                batch = batch.pin_memory()
            out = adapter.predict(batch.to(device, non_blocking=pin))
            for key, value in out.items():
                collected.setdefault(key, []).append(value.detach())
    # One transfer at the end instead of a host sync per batch.
    return {k: torch.cat(v).float().cpu().numpy() for k, v in collected.items()}


class PredictionCache:
    """Raw outputs keyed by (split, keep-mask digest): cells whose masks coincide exactly
    (every mode at rate 0 and SMM[TAV]; RMFM, RMFM_same and RMM at rate 1) share one
    inference pass. Valid only for one trained adapter (the runner makes one per setting)."""

    def __init__(self) -> None:
        self._outputs: dict[tuple[str, bytes], dict[str, np.ndarray]] = {}
        self.hits = 0

    @staticmethod
    def digest(keep: KeepMasks) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for mask in (keep.text, keep.audio, keep.vision):
            arr = mask.cpu().numpy().astype(bool)
            h.update(str(arr.shape).encode())
            h.update(np.packbits(arr).tobytes())
        return h.digest()

    def predict(
        self,
        split: str,
        keep: KeepMasks,
        compute: Callable[[], dict[str, np.ndarray]],
    ) -> dict[str, np.ndarray]:
        key = (split, self.digest(keep))
        if key in self._outputs:
            self.hits += 1
        else:
            self._outputs[key] = compute()
        return self._outputs[key]


def knob_candidates(adapter: Adapter) -> list[dict[str, float]]:
    """Every combination of the adapter's knob grid (``[{}]`` when it has none)."""
    grid = adapter.knob_grid
    if not grid:
        return [dict(adapter.default_knobs)]
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def knob_table(
    adapter: Adapter,
    outputs: Mapping[str, np.ndarray],
    labels: np.ndarray,
    candidates: list[dict[str, float]],
) -> tuple[list[np.ndarray], dict[int, dict[str, float]]]:
    """Scores and metrics under every knob candidate, by candidate index."""
    scores = [adapter.scores(outputs, knobs) for knobs in candidates]
    return scores, dict(enumerate(compute_metrics_stack(adapter.ctx.task, scores, labels)))


@dataclass
class Selection:
    """One way of choosing knobs for a cell, and what it gives on test."""

    name: str
    knobs: dict[str, float]
    metrics: dict[str, float]
    scores: np.ndarray
    """Test scores under ``knobs`` (for test-oracle: the selection metric's knob)."""
    per_metric_knobs: dict[str, dict[str, float]] = field(default_factory=dict)
    """test-oracle only: the knob each metric was maximised at."""


@dataclass
class CellEvaluation:
    cell: Cell
    selections: dict[str, Selection]
    primary: str
    """Which selection is this run's headline (``valid``/``test-oracle``/``none``)."""
    labels: np.ndarray


def best_knob_score(
    adapter: Adapter, outputs: Mapping[str, np.ndarray], labels: np.ndarray
) -> float:
    """The task's selection metric at the best post-hoc knob (``nan`` ignored): what early
    stopping and tuning compare."""
    metric = adapter.ctx.task.info.selection_metric
    _, table = knob_table(adapter, outputs, labels, knob_candidates(adapter))
    return best_value((row[metric] for row in table.values()), metric)


def evaluate_cell(
    adapter: Adapter,
    valid: SplitTensors,
    test: SplitTensors,
    cell: Cell,
    seed: int,
    *,
    batch_size: int,
    device: torch.device,
    mask_rng: MaskRng | str = MaskRng.PER_SAMPLE,
    tau_selection: TauSelection | str = TauSelection.VALID,
    precision: Precision | str = Precision.FP32,
    cache: PredictionCache | None = None,
) -> CellEvaluation:
    """Evaluate one cell on test; select knobs on validation under the same cell.

    ``tau_selection`` names the headline selection; an unknown value is an error."""
    primary = parse_enum(TauSelection, tau_selection, "tau selection").value
    task = adapter.ctx.task
    labels = test.split.labels(task)
    cache = cache or PredictionCache()

    def outputs(name: str, data: SplitTensors) -> dict[str, np.ndarray]:
        keep = cell_keep(data, cell, seed, mask_rng)
        return cache.predict(
            name, keep, lambda: predict_split(adapter, data, keep, batch_size, device, precision)
        )

    test_out = outputs("test", test)
    candidates = knob_candidates(adapter)
    if not adapter.knob_grid:
        knobs = candidates[0]
        scores = adapter.scores(test_out, knobs)
        only = Selection(SELECTION_NONE, knobs, compute_metrics(task, scores, labels), scores)
        return CellEvaluation(cell, {SELECTION_NONE: only}, SELECTION_NONE, labels)

    metric = task.info.selection_metric
    test_scores, test_table = knob_table(adapter, test_out, labels, candidates)

    valid_out = outputs("valid", valid)
    valid_labels = valid.split.labels(task)
    # Candidates by index: ties go to the earliest, and the grid starts at "no adjustment".
    _, valid_table = knob_table(adapter, valid_out, valid_labels, candidates)
    v = select_knob(valid_table, metric)
    selections = {
        SELECTION_VALID: Selection(SELECTION_VALID, candidates[v], test_table[v], test_scores[v])
    }
    default = dict(adapter.default_knobs)
    d = candidates.index(default) if default in candidates else 0
    selections[SELECTION_DEFAULT] = Selection(
        SELECTION_DEFAULT, candidates[d], test_table[d], test_scores[d]
    )
    oracle_metrics, chosen = oracle_per_metric(test_table, task)
    per_metric = {name: candidates[i] for name, i in chosen.items()}
    o = select_knob(test_table, metric)
    selections[SELECTION_ORACLE] = Selection(
        SELECTION_ORACLE, candidates[o], oracle_metrics, test_scores[o], per_metric
    )
    return CellEvaluation(cell, selections, primary, labels)
