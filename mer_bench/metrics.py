"""Per-cell metrics, AUILC, seed aggregation and post-hoc knob selection.

Definitions follow MMSA's ``metricsTop`` for regression outputs and CIDer's classification
metrics (docs/architecture.md, docs/cider.md). Every accuracy and F1 is a fraction in [0, 1]; every
F1 is sklearn's ``f1_score(average="weighted")``, re-implemented here with numpy so that sklearn is
not a dependency. Metric names are the export column names (docs/architecture.md, Exports) and
``TASK_INFO[task].metrics``.

A metric whose sample subset is empty (Non0 on a split whose truths are all neutral) is ``nan``;
an empty split is an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import TypeVar

import numpy as np

from mer_bench.errors import AdapterError, ConfigError, DataError, ProtocolError
from mer_bench.protocol import RATES, TASK_INFO, Task

LOWER_IS_BETTER: frozenset[str] = frozenset({"mae"})
"""Metrics where smaller is better; every other metric is maximised. The one record of metric
direction: checkpoint selection, knob selection, tuning, tables and plots all ask
:func:`higher_is_better`."""

_NEG, _NEU, _POS = 0, 1, 2


# --------------------------------------------------------------------------------- primitives


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if y_true.size == 0:
        return math.nan
    return float(np.mean(y_true == y_pred))


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """sklearn's ``f1_score(y_true, y_pred, average="weighted", zero_division=0)``.

    Labels are the sorted union of true and predicted labels; each label's F1 is
    ``2·TP / (2·TP + FP + FN)`` (0 when it has no true positive), weighted by its true support.
    A label that is only ever predicted therefore has weight 0 but still lowers the recall of the
    classes it was confused with. Empty inputs give ``nan``.
    """
    t_raw = np.asarray(y_true).ravel()
    p_raw = np.asarray(y_pred).ravel()
    if t_raw.shape != p_raw.shape:
        raise ValueError(f"weighted_f1: {t_raw.size} truths but {p_raw.size} predictions")
    n = t_raw.size
    if n == 0:
        return math.nan
    _, codes = np.unique(np.concatenate([t_raw, p_raw]), return_inverse=True)
    codes = codes.ravel()
    t, p = codes[:n], codes[n:]
    k = int(codes.max()) + 1
    support = np.bincount(t, minlength=k)
    predicted = np.bincount(p, minlength=k)
    true_pos = np.bincount(t[t == p], minlength=k)
    # Every label is in the union, so support + predicted > 0: no zero division can occur.
    f1 = 2.0 * true_pos / (support + predicted)
    return float(np.dot(f1, support) / n)


def _acc_f1(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    return _accuracy(y_true, y_pred), weighted_f1(y_true, y_pred)


# --------------------------------------------------------------------------------- input checks


def _class_inputs(task: Task, scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    num_classes = TASK_INFO[task].num_classes
    if num_classes is None:
        raise ProtocolError(f"task {task.value!r} has no classes; use regression_metrics")
    s = np.asarray(scores)
    if s.ndim != 2 or s.shape[1] != num_classes or s.dtype.kind not in "biuf":
        raise AdapterError(
            f"{task.value} task needs numeric scores of shape (N, {num_classes}); "
            f"got {s.dtype} {tuple(s.shape)}"
        )
    if np.isnan(s).any():
        raise AdapterError(
            f"scores contain NaN in {int(np.isnan(s).any(axis=1).sum())} of {s.shape[0]} samples"
        )
    y = _integer_labels(labels, num_classes, task)
    if y.shape[0] != s.shape[0]:
        raise AdapterError(f"{s.shape[0]} score rows but {y.shape[0]} labels")
    if y.size == 0:
        raise DataError("cannot compute metrics on an empty split")
    return s, y


def _integer_labels(labels: np.ndarray, num_classes: int, task: Task) -> np.ndarray:
    raw = np.asarray(labels).ravel()
    valid = f"{task.value} labels must be integers in 0..{num_classes - 1}"
    if raw.dtype.kind not in "biuf":
        raise DataError(f"{valid}; got dtype {raw.dtype}")
    # Some MMSA files store class labels as floats (docs/architecture.md, Data); accept exact integers.
    if raw.dtype.kind == "f" and not (
        np.isfinite(raw).all() and np.array_equal(raw, np.round(raw))
    ):
        raise DataError(f"{valid}; found non-integer values")
    y = raw.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{valid}; found {y.min() if y.min() < 0 else y.max()}")
    return y


# --------------------------------------------------------------------------------- per task


def classification_metrics(task: Task, scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics of per-class scores against class labels (docs/cider.md).

    binary (scores (N, 3) over neg/neu/pos, labels 0/1/2):

    - ``has0_acc2``/``has0_f1``: truth negative (0) vs non-negative (1, 2); the prediction is the
      argmax over the negative and positive columns only, so the neutral column is ignored.
    - ``non0_acc2``/``non0_f1``: samples with a neutral truth are dropped; the prediction is the
      3-way argmax, so predicting neutral is always wrong.
    - ``acc3``/``f1_3``: 3-way argmax over all samples.

    seven (scores (N, 7), labels 0..6): ``acc7``/``f1_7``.

    Argmax ties go to the lowest class index, as ``torch.argmax``/``np.argmax`` do.
    """
    s, y = _class_inputs(task, scores, labels)
    pred = np.argmax(s, axis=1)
    if task is Task.SEVEN:
        acc7, f1_7 = _acc_f1(y, pred)
        return {"acc7": acc7, "f1_7": f1_7}
    # Strict ">" sends a neg/pos tie to the negative column (the lower index).
    has0_pred = s[:, _POS] > s[:, _NEG]
    has0_acc2, has0_f1 = _acc_f1(y != _NEG, has0_pred)
    keep = y != _NEU
    non0_acc2, non0_f1 = _acc_f1(y[keep], pred[keep])
    acc3, f1_3 = _acc_f1(y, pred)
    return {
        "has0_acc2": has0_acc2,
        "has0_f1": has0_f1,
        "non0_acc2": non0_acc2,
        "non0_f1": non0_f1,
        "acc3": acc3,
        "f1_3": f1_3,
    }


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xc = x - x.mean()
    yc = y - y.mean()
    denom = math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc)))
    if denom == 0.0:
        return 0.0
    return float(np.clip(np.dot(xc, yc) / denom, -1.0, 1.0))


def regression_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """MMSA ``metricsTop`` for regression outputs p against truths t (docs/architecture.md, Data).

    - ``mae``: mean |p − t|.
    - ``corr``: Pearson correlation of p and t. When either side is constant the correlation is
      undefined (numpy would return nan with a warning); it is reported as 0.0 instead, i.e. a
      model that predicts a constant carries no linear information.
    - ``has0_acc2``/``has0_f1``: t ≥ 0 vs p ≥ 0 over all samples.
    - ``non0_acc2``/``non0_f1``: samples with t ≠ 0 only; t > 0 vs p > 0.
    - ``acc5``: both clipped to [-2, 2] and rounded half to even, then compared (MMSA's
      ``Mult_acc_5``, which LNLN and EMT-DLFR report).
    - ``acc7``/``f1_7``: both clipped to [-3, 3] and rounded half to even (−2.5 → −2, 0.5 → 0,
      2.5 → 2, as numpy rounds and as the seven-class labels are built), then compared.

    Computed in float64.
    """
    p = np.asarray(pred, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    t = np.asarray(truth, dtype=np.float64).ravel()
    if p.ndim != 1:
        raise AdapterError(f"regression needs scores of shape (N,) or (N, 1); got {p.shape}")
    if p.shape != t.shape:
        raise AdapterError(f"{p.size} predictions but {t.size} labels")
    if t.size == 0:
        raise DataError("cannot compute metrics on an empty split")
    if np.isnan(p).any():
        raise AdapterError(f"predictions contain NaN in {int(np.isnan(p).sum())} of {p.size}")
    if not np.isfinite(t).all():
        raise DataError("regression labels must be finite")
    has0_acc2, has0_f1 = _acc_f1(t >= 0, p >= 0)
    nonzero = t != 0
    non0_acc2, non0_f1 = _acc_f1(t[nonzero] > 0, p[nonzero] > 0)
    acc5 = _accuracy(np.round(np.clip(t, -2.0, 2.0)), np.round(np.clip(p, -2.0, 2.0)))
    t7 = np.round(np.clip(t, -3.0, 3.0))
    p7 = np.round(np.clip(p, -3.0, 3.0))
    acc7, f1_7 = _acc_f1(t7, p7)
    return {
        "has0_acc2": has0_acc2,
        "has0_f1": has0_f1,
        "non0_acc2": non0_acc2,
        "non0_f1": non0_f1,
        "acc5": acc5,
        "acc7": acc7,
        "f1_7": f1_7,
        "mae": float(np.mean(np.abs(p - t))),
        "corr": _pearson(p, t),
    }


_METRIC_FNS: dict[Task, Callable[[np.ndarray, np.ndarray], dict[str, float]]] = {
    Task.BINARY: partial(classification_metrics, Task.BINARY),
    Task.SEVEN: partial(classification_metrics, Task.SEVEN),
    Task.REGRESSION: regression_metrics,
}


def compute_metrics(task: Task, scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The metrics of one cell: exactly ``TASK_INFO[task].metrics``, in that order.

    ``scores`` are what ``Adapter.scores`` returns: (N, C) per-class scores for classification
    tasks, (N,) predicted scores for regression.
    """
    values = _METRIC_FNS[task](scores, labels)
    return {name: values[name] for name in TASK_INFO[task].metrics}


def _acc_f1_stack(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> tuple[list, list]:
    """Accuracy and weighted F1 of each row of ``y_pred`` (K, N) against ``y_true`` (N,), codes in
    0..classes-1: :func:`_accuracy` and :func:`weighted_f1` for K predictions at once (a class
    outside the union of truths and predictions has no support and no prediction, so summing
    over every class equals summing over the union)."""
    k, n = y_pred.shape
    if n == 0:
        return [math.nan] * k, [math.nan] * k
    correct = y_pred == y_true[None, :]
    offsets = (np.arange(k) * classes)[:, None]
    support = np.bincount(y_true, minlength=classes).astype(np.float64)
    predicted = np.bincount((y_pred + offsets).ravel(), minlength=k * classes).reshape(k, classes)
    true_pos = np.bincount((y_pred + offsets)[correct], minlength=k * classes).reshape(k, classes)
    total = support[None, :] + predicted
    f1 = np.divide(2.0 * true_pos, total, out=np.zeros(total.shape), where=total > 0)
    accuracy = correct.mean(axis=1)
    weighted = (f1 @ support) / n
    return [float(a) for a in accuracy], [float(f) for f in weighted]


def compute_metrics_stack(
    task: Task, scores: Sequence[np.ndarray], labels: np.ndarray
) -> list[dict[str, float]]:
    """:func:`compute_metrics` of several score arrays against the same labels (one per knob
    value), vectorised over them for the classification tasks; equal to calling
    :func:`compute_metrics` on each up to float rounding (≤ 1e-12)."""
    if task is Task.REGRESSION or len(scores) < 2:
        return [compute_metrics(task, s, labels) for s in scores]
    checked = [_class_inputs(task, s, labels) for s in scores]
    y = checked[0][1]
    s = np.stack([c[0] for c in checked])  # (K, N, C)
    pred = np.argmax(s, axis=2)
    if task is Task.SEVEN:
        acc7, f1_7 = _acc_f1_stack(y, pred, 7)
        rows = [{"acc7": a, "f1_7": f} for a, f in zip(acc7, f1_7, strict=True)]
    else:
        has0_pred = (s[:, :, _POS] > s[:, :, _NEG]).astype(np.int64)
        has0 = _acc_f1_stack((y != _NEG).astype(np.int64), has0_pred, 2)
        keep = y != _NEU
        non0 = _acc_f1_stack(y[keep], pred[:, keep], 3)
        three = _acc_f1_stack(y, pred, 3)
        rows = [
            {
                "has0_acc2": has0[0][i],
                "has0_f1": has0[1][i],
                "non0_acc2": non0[0][i],
                "non0_f1": non0[1][i],
                "acc3": three[0][i],
                "f1_3": three[1][i],
            }
            for i in range(len(scores))
        ]
    return [{name: row[name] for name in TASK_INFO[task].metrics} for row in rows]


# --------------------------------------------------------------------------------- curves, seeds


def auilc(values: Sequence[float], rates: Sequence[float] = RATES) -> float:
    """Area under the metric-vs-missing-rate curve, trapezoid rule (docs/cider.md).

    With the default 11 rates 0.0 … 1.0 the area equals the mean height of the curve, so it is on
    the metric's own scale. A ``nan`` value makes the area ``nan``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    r = np.asarray(rates, dtype=np.float64).ravel()
    if v.size != r.size:
        raise ProtocolError(f"AUILC needs one value per rate ({r.size}); got {v.size}")
    if r.size < 2 or not np.all(np.diff(r) > 0):
        raise ProtocolError("AUILC needs at least two strictly increasing rates")
    return float(np.sum((v[1:] + v[:-1]) * np.diff(r)) / 2.0)


@dataclass(frozen=True)
class CurveWeights:
    """A linear summary of a metric-vs-rate curve: Σ_i weights[i] · value(rates[i])."""

    rates: tuple[float, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.rates) != len(self.weights) or not self.rates:
            raise ProtocolError("a curve summary needs one weight per rate")

    def of(self, values: Sequence[float]) -> float:
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size != len(self.rates):
            raise ProtocolError(f"the curve summary needs {len(self.rates)} values; got {v.size}")
        return float(np.dot(np.asarray(self.weights), v))

    def minus_clean(self) -> CurveWeights:
        """The same summary of ``curve − curve(rate 0)``: the area lost to missing data
        (its difference between two models is their effective robustness)."""
        if self.rates[0] != 0.0:
            raise ProtocolError("the clean score needs rate 0.0 on the curve")
        total = float(sum(self.weights))
        return CurveWeights(self.rates, (self.weights[0] - total, *self.weights[1:]))


def trapezoid(rates: Sequence[float]) -> CurveWeights:
    """Trapezoid-rule weights over ``rates``: ``of`` equals ``auilc``."""
    r = np.asarray(rates, dtype=np.float64)
    if r.size < 2 or not np.all(np.diff(r) > 0):
        raise ProtocolError("AUILC needs at least two strictly increasing rates")
    w = np.zeros(r.size)
    w[:-1] += np.diff(r) / 2
    w[1:] += np.diff(r) / 2
    return CurveWeights(tuple(float(x) for x in r), tuple(float(x) for x in w))


def curve_weights(rates: Sequence[float] | CurveWeights) -> CurveWeights:
    """``rates`` as a summary: a CurveWeights as is, a rate sequence as its trapezoid (AUILC)."""
    return rates if isinstance(rates, CurveWeights) else trapezoid(rates)


class Aggregate(str, Enum):
    """How a degradation curve becomes one number (never mixed in one column)."""

    AUILC = "AUILC"
    """Area under the curve over rates 0.0 … 1.0, trapezoid rule (CIDer, EMT-DLFR)."""
    MEAN_0_09 = "mean@0-0.9"
    """Plain mean over rates 0.0 … 0.9 (LNLN's headline)."""

    @property
    def curve(self) -> CurveWeights:
        if self is Aggregate.AUILC:
            return trapezoid(RATES)
        rates = tuple(r for r in RATES if r <= 0.9)
        return CurveWeights(rates, tuple(1.0 / len(rates) for _ in rates))

    @property
    def description(self) -> str:
        if self is Aggregate.AUILC:
            return "AUILC: trapezoid area under the curve over rates 0.0-1.0"
        return "mean over rates 0.0-0.9"


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) across seeds; sd is ``nan`` when n < 2.

    The mean of no values is ``nan`` too.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    mean = float(v.mean()) if v.size else math.nan
    sd = float(v.std(ddof=1)) if v.size >= 2 else math.nan
    return mean, sd


# --------------------------------------------------------------------------------- direction


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` are better (all but ``mae``)."""
    return metric not in LOWER_IS_BETTER


def worst_value(metric: str) -> float:
    """A value every real value of ``metric`` beats (-inf, or +inf for lower-is-better)."""
    return -math.inf if higher_is_better(metric) else math.inf


def improves(new: float, old: float, metric: str) -> bool:
    """Whether ``new`` is strictly better than ``old`` on ``metric`` (``nan`` never is)."""
    return new > old if higher_is_better(metric) else new < old


def best_value(values: Iterable[float], metric: str) -> float:
    """The best of ``values`` on ``metric``, ignoring ``nan``; :func:`worst_value` if none."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return worst_value(metric)
    return max(finite) if higher_is_better(metric) else min(finite)


# --------------------------------------------------------------------------------- knobs

K = TypeVar("K", bound=float)


def select_knob(
    candidates: Mapping[K, Mapping[str, float]],
    metric: str,
    maximise: bool | None = None,
) -> K:
    """The knob value (e.g. CIDer's τ, or a candidate's index) whose metrics are best on ``metric``.

    The direction is the metric's (:func:`higher_is_better`) unless ``maximise`` is given. Ties go
    to the smallest knob value, so with τ the unadjusted τ = 0 wins unless a larger τ strictly helps.
    ``nan`` values never win; if every value is ``nan`` the smallest knob is returned.
    """
    if not candidates:
        raise ConfigError("no knob candidates to select from")
    if maximise is None:
        maximise = higher_is_better(metric)
    knobs = sorted(candidates)
    missing = [k for k in knobs if metric not in candidates[k]]
    if missing:
        available = ", ".join(sorted(candidates[missing[0]]))
        raise ConfigError(f"metric {metric!r} is not among the candidate metrics ({available})")
    values = np.array([candidates[k][metric] for k in knobs], dtype=np.float64)
    if not maximise:
        values = -values
    # np.argmax returns the first maximum, i.e. the smallest knob among ties.
    return knobs[int(np.argmax(np.nan_to_num(values, nan=-np.inf)))]


def oracle_per_metric(
    candidates: Mapping[K, Mapping[str, float]], task: Task
) -> tuple[dict[str, float], dict[str, K]]:
    """The paper's test-oracle protocol: each metric optimised over the knob independently.

    This tunes on test labels and different metrics may use different knob values (a quirk of
    the reference protocol, see docs/cider.md); results from it must be labelled
    ``test-oracle``. Each metric of ``TASK_INFO[task].metrics`` is optimised in its direction,
    ties to the smallest knob. Returns (best value per metric, knob chosen per metric).
    """
    best: dict[str, float] = {}
    chosen: dict[str, K] = {}
    for name in TASK_INFO[task].metrics:
        knob = select_knob(candidates, name)
        chosen[name] = knob
        best[name] = candidates[knob][name]
    return best, chosen
