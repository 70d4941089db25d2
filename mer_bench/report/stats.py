"""Statistics for reports: paired tests on identical masks, bootstrap CIs, Holm, ASO, CD ranks.

Everything works on *pairs* (seed, sample): every model of a cell saw the same masks for the same
seed (docs/architecture.md), so model A's prediction for sample i under seed s is paired with model B's.

Metrics are re-computed from stored per-sample predictions through :class:`MetricView`, which
turns a stored (labels, scores) pair into what one metric compares: a truth code and a predicted
code for accuracies and F1s, a per-sample error for MAE, a (prediction, truth) pair for Pearson.
The view's weights (0/1) drop the samples a metric ignores (Non0 drops neutral truths), so one
vectorised kernel (:func:`metric_rows`) evaluates any metric over many resamples at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from mer_bench.errors import ConfigError
from mer_bench.metrics import CurveWeights, curve_weights, higher_is_better
from mer_bench.protocol import Task

_NEG, _NEU, _POS = 0, 1, 2

# kinds of metric kernels
ACCURACY = "accuracy"
F1 = "f1"
MEAN = "mean"
CORR = "corr"

_KIND: dict[str, str] = {
    "has0_acc2": ACCURACY,
    "non0_acc2": ACCURACY,
    "acc3": ACCURACY,
    "acc5": ACCURACY,
    "acc7": ACCURACY,
    "has0_f1": F1,
    "non0_f1": F1,
    "f1_3": F1,
    "f1_7": F1,
    "mae": MEAN,
    "corr": CORR,
}


@dataclass(frozen=True)
class MetricView:
    """What one metric compares, per (seed, sample): ``truth``/``pred`` codes or values.

    Arrays have the shape of the input labels (e.g. (S, N)); ``weight`` is 1 where the sample
    counts for the metric, 0 where the metric drops it.
    """

    metric: str
    kind: str
    truth: np.ndarray
    pred: np.ndarray
    weight: np.ndarray
    n_codes: int

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)


def metric_view(task: Task, metric: str, labels: np.ndarray, scores: np.ndarray) -> MetricView:
    """Build the per-sample view of ``metric`` from labels (..., N) and scores (..., N[, C]).

    The decision rules are those of :mod:`mer_bench.metrics` (docs/cider.md, docs/architecture.md).
    """
    if metric not in task.info.metrics:
        raise ConfigError(
            f"metric {metric!r} is not reported for task {task.value}; "
            f"valid: {', '.join(task.info.metrics)}"
        )
    kind = _KIND[metric]
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    ones = np.ones(labels.shape)
    if task is Task.REGRESSION:
        p = scores[..., 0] if scores.ndim == labels.ndim + 1 else scores
        t = labels
        if metric in ("has0_acc2", "has0_f1"):
            return MetricView(metric, kind, (t >= 0) * 1, (p >= 0) * 1, ones, 2)
        if metric in ("non0_acc2", "non0_f1"):
            return MetricView(metric, kind, (t > 0) * 1, (p > 0) * 1, (t != 0) * 1.0, 2)
        if metric == "acc5":
            t5 = np.round(np.clip(t, -2.0, 2.0)).astype(np.int64) + 2
            p5 = np.round(np.clip(p, -2.0, 2.0)).astype(np.int64) + 2
            return MetricView(metric, kind, t5, p5, ones, 5)
        if metric in ("acc7", "f1_7"):
            t7 = np.round(np.clip(t, -3.0, 3.0)).astype(np.int64) + 3
            p7 = np.round(np.clip(p, -3.0, 3.0)).astype(np.int64) + 3
            return MetricView(metric, kind, t7, p7, ones, 7)
        if metric == "mae":
            return MetricView(metric, kind, np.zeros_like(t), np.abs(p - t), ones, 0)
        return MetricView(metric, kind, t, p, ones, 0)
    y = labels.astype(np.int64)
    argmax = np.argmax(scores, axis=-1)
    if metric in ("has0_acc2", "has0_f1"):
        # strict ">" sends a neg/pos tie to the negative class, as metrics.py does
        pred = (scores[..., _POS] > scores[..., _NEG]) * 1
        return MetricView(metric, kind, (y != _NEG) * 1, pred, ones, 2)
    if metric in ("non0_acc2", "non0_f1"):
        return MetricView(metric, kind, y, argmax, (y != _NEU) * 1.0, 3)
    return MetricView(metric, kind, y, argmax, ones, task.info.num_classes or 0)


def metric_rows(
    kind: str, truth: np.ndarray, pred: np.ndarray, weight: np.ndarray, n_codes: int
) -> np.ndarray:
    """Evaluate one metric on every row of (R, N) arrays at once (weights: counts per sample).

    Weighted F1 follows sklearn's ``average="weighted"``: per-code ``2·TP/(support+predicted)``
    weighted by support; codes never seen in a row contribute nothing.
    """
    truth, pred, weight = np.broadcast_arrays(truth, pred, weight)
    w = weight.astype(np.float64)
    total = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == ACCURACY:
            return (w * (truth == pred)).sum(axis=-1) / total
        if kind == MEAN:
            return (w * pred).sum(axis=-1) / total
        if kind == CORR:
            mp = (w * pred).sum(-1, keepdims=True) / total[..., None]
            mt = (w * truth).sum(-1, keepdims=True) / total[..., None]
            dp, dt = pred - mp, truth - mt
            cov = (w * dp * dt).sum(-1)
            denom = np.sqrt((w * dp * dp).sum(-1) * (w * dt * dt).sum(-1))
            # a constant side carries no linear information: 0.0, as metrics.py reports
            return np.where(denom > 0, np.clip(cov / np.where(denom > 0, denom, 1), -1, 1), 0.0)
        if kind == F1:
            rows = truth.shape[:-1]
            r = int(np.prod(rows)) if rows else 1
            k = n_codes
            t = truth.reshape(r, -1).astype(np.int64)
            p = pred.reshape(r, -1).astype(np.int64)
            ww = w.reshape(r, -1)
            offset = np.arange(r)[:, None] * k
            support = np.bincount((offset + t).ravel(), ww.ravel(), r * k).reshape(r, k)
            predicted = np.bincount((offset + p).ravel(), ww.ravel(), r * k).reshape(r, k)
            hit = ww * (t == p)
            tp = np.bincount((offset + t).ravel(), hit.ravel(), r * k).reshape(r, k)
            denom = support + predicted
            f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
            return ((f1 * support).sum(-1) / ww.sum(-1)).reshape(rows)
    raise ConfigError(f"unknown metric kind {kind!r}")


def seed_mean(view: MetricView, weight: np.ndarray | None = None) -> np.ndarray:
    """Per-seed metric values (S,) of a view shaped (S, N), optionally with extra weights."""
    w = view.weight if weight is None else view.weight * weight
    return metric_rows(view.kind, view.truth, view.pred, w, view.n_codes)


# --------------------------------------------------------------------------- paired tests


@dataclass(frozen=True)
class Comparison:
    """Model A against baseline B on one cell (or an AUILC): effect, CI, p-value, ASO."""

    diff: float
    """mean over seeds of A − B (metric units; positive = A higher)."""
    ci_low: float
    ci_high: float
    p_value: float
    aso_eps: float | None = None
    """ASO ε_min of A over B on seed-level scores (< 0.5: A almost dominates); None < 3 seeds."""


def _curve(values: np.ndarray, rates: Sequence[float] | CurveWeights | None) -> np.ndarray:
    """Collapse the rate axis (axis 0 when ``rates`` is given) by the curve summary: the
    trapezoid AUILC for a rate sequence, or any ``CurveWeights`` (e.g. a mean over rates)."""
    if rates is None:
        return values[0]
    w = np.asarray(curve_weights(rates).weights, dtype=np.float64)
    return np.tensordot(w, values, axes=(0, 0))


def _stack_views(views: Sequence[MetricView]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    truth = np.stack([v.truth for v in views])
    pred = np.stack([v.pred for v in views])
    weight = np.stack([v.weight for v in views])
    return truth, pred, weight


def paired_permutation_test(
    views_a: Sequence[MetricView],
    views_b: Sequence[MetricView],
    rates: Sequence[float] | CurveWeights | None = None,
    *,
    n_resamples: int = 9999,
    seed: int = 0,
) -> tuple[float, float]:
    """Two-sided paired permutation test of A vs B; returns (observed difference, p-value).

    ``views_*`` hold one (S, N) view per rate of a curve (or one view for a single cell). Under
    H0 the two models are exchangeable within each (seed, sample) pair, so each resample swaps
    A's and B's predictions of a random half of the pairs — for every rate at once, since a pair
    is one masked input seen at every rate. The statistic is the difference of the
    seed-averaged metric (its AUILC when ``rates`` is given); p = (1 + #{|T*| ≥ |T|}) / (1 + B),
    the Monte Carlo p-value of ``scipy.stats.permutation_test(permutation_type="samples")``,
    which this reproduces (tests check the agreement) at a fraction of its cost.

    Accuracies and MAE are linear in the per-pair differences, so a resample is one signed sum
    (a matrix product); F1 and Pearson are recomputed exactly on the swapped predictions.
    """
    ta, pa, wa = _stack_views(views_a)
    tb, pb, wb = _stack_views(views_b)
    if ta.shape != tb.shape or not np.array_equal(ta, tb) or not np.array_equal(wa, wb):
        raise ConfigError("paired test needs the same samples and labels for both models")
    view = views_a[0]
    n_rates, n_seeds, n = pa.shape
    value_a = _curve(metric_rows(view.kind, ta, pa, wa, view.n_codes).mean(-1), rates)
    value_b = _curve(metric_rows(view.kind, tb, pb, wb, view.n_codes).mean(-1), rates)
    observed = float(value_a - value_b)
    if np.array_equal(pa, pb) or not math.isfinite(observed):
        return observed, 1.0
    rng = np.random.default_rng(seed)
    if view.kind in (ACCURACY, MEAN):
        # T = Σ_pairs e_i with e_i the pair's weighted contribution (all rates folded in);
        # swapping a pair flips the sign of its e_i.
        per = (pa == ta) if view.kind == ACCURACY else pa
        per_b = (pb == tb) if view.kind == ACCURACY else pb
        coef = wa / (wa.sum(-1, keepdims=True) * n_seeds)  # (R, S, N)
        contrib = coef * (per.astype(np.float64) - per_b.astype(np.float64))
        if rates is not None:
            fold = np.asarray(curve_weights(rates).weights, dtype=np.float64)
            contrib = contrib * fold[:, None, None]
        e = contrib.sum(0).ravel()
        e = e[e != 0]
        null = np.empty(n_resamples)
        chunk = max(1, int(4_000_000 // max(1, e.size)))
        for start in range(0, n_resamples, chunk):
            b = min(chunk, n_resamples - start)
            signs = rng.integers(0, 2, size=(b, e.size), dtype=np.int8) * 2 - 1
            null[start : start + b] = signs @ e
    else:
        null = np.empty(n_resamples)
        chunk = max(1, int(2_000_000 // max(1, n_rates * n_seeds * n)))
        for start in range(0, n_resamples, chunk):
            b = min(chunk, n_resamples - start)
            swap = rng.random((b, 1, n_seeds, n)) < 0.5
            swap = np.broadcast_to(swap[None], (n_rates, b, 1, n_seeds, n))[:, :, 0]
            a_star = np.where(swap, pb[:, None], pa[:, None])
            b_star = np.where(swap, pa[:, None], pb[:, None])
            va = metric_rows(view.kind, ta[:, None], a_star, wa[:, None], view.n_codes)
            vb = metric_rows(view.kind, tb[:, None], b_star, wb[:, None], view.n_codes)
            null[start : start + b] = _curve(va.mean(-1), rates) - _curve(vb.mean(-1), rates)
    # a relative tolerance keeps float noise from hiding the resamples equal to the observed
    extreme = np.abs(null) >= abs(observed) * (1 - 1e-9)
    return observed, float((1 + extreme.sum()) / (1 + n_resamples))


def bootstrap_weights(
    n_seeds: int,
    n_samples: int,
    n_boot: int,
    rng: np.random.Generator,
    *,
    resample_seeds: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Two-level paired bootstrap: sample counts (B, N) shared by all seeds, seed counts (B, S).

    The same draws are applied to every model, rate and selection, so resampled statistics stay
    paired. Samples are resampled once per draw for all seeds because sample i is the same
    utterance under every seed. Without ``resample_seeds`` the seeds are held fixed (every draw
    keeps each seed once): the CI then answers the same question as the paired permutation test
    (these trained models on resampled inputs); with it, it also covers seed-to-seed variation.
    """
    w_samples = rng.multinomial(n_samples, np.full(n_samples, 1.0 / n_samples), size=n_boot)
    if resample_seeds:
        w_seeds = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_boot)
    else:
        w_seeds = np.ones((n_boot, n_seeds), dtype=np.int64)
    return w_samples.astype(np.float64), w_seeds.astype(np.float64)


def bootstrap_values(
    views: Sequence[MetricView],
    weights: tuple[np.ndarray, np.ndarray],
    rates: Sequence[float] | CurveWeights | None = None,
) -> np.ndarray:
    """Bootstrap replicates (B,) of the seed-averaged metric (or its AUILC over ``rates``)."""
    w_samples, w_seeds = weights
    truth, pred, weight = _stack_views(views)  # (R, S, N)
    n_rates, n_seeds, n = truth.shape
    out = np.empty((n_rates, w_samples.shape[0]))
    view = views[0]
    chunk = max(1, int(2_000_000 // max(1, n_seeds * n)))
    for start in range(0, w_samples.shape[0], chunk):
        ws = w_samples[start : start + chunk]  # (b, N)
        cs = w_seeds[start : start + chunk]  # (b, S)
        w = weight[:, None] * ws[None, :, None, :]  # (R, b, S, N)
        per_seed = metric_rows(view.kind, truth[:, None], pred[:, None], w, view.n_codes)
        out[:, start : start + chunk] = (per_seed * cs[None]).sum(-1) / n_seeds
    return _curve(out, rates)


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def compare(
    views_a: Sequence[MetricView],
    views_b: Sequence[MetricView],
    rates: Sequence[float] | CurveWeights | None = None,
    *,
    n_resamples: int = 9999,
    n_boot: int = 1000,
    seed: int = 0,
    aso: bool = True,
    resample_seeds: bool = False,
) -> Comparison:
    """Paired permutation p-value, paired-bootstrap 95% CI of A − B and (≥ 3 seeds) ASO.

    The CI resamples samples with the seeds held fixed unless ``resample_seeds``, so that it
    and the test target the same quantity; ASO speaks to the seed-to-seed variation.
    """
    diff, p = paired_permutation_test(views_a, views_b, rates, n_resamples=n_resamples, seed=seed)
    n_seeds, n = views_a[0].truth.shape
    weights = bootstrap_weights(
        n_seeds, n, n_boot, np.random.default_rng(seed + 1), resample_seeds=resample_seeds
    )
    reps = bootstrap_values(views_a, weights, rates) - bootstrap_values(views_b, weights, rates)
    lo, hi = percentile_ci(reps)
    eps = None
    if aso and n_seeds >= 3:
        seed_a = _curve(np.stack([seed_mean(v) for v in views_a]), rates)
        seed_b = _curve(np.stack([seed_mean(v) for v in views_b]), rates)
        sign = 1.0 if views_a[0].higher_is_better else -1.0
        eps = aso_epsilon(sign * seed_a, sign * seed_b, seed=seed)
    return Comparison(diff, lo, hi, p, eps)


# --------------------------------------------------------------------------- corrections


def holm(p_values: Sequence[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm–Bonferroni (statsmodels): (reject, adjusted p) in input order; nan p never rejects."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=np.float64)
    reject = np.zeros(p.shape, dtype=bool)
    adjusted = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        r, adj, _, _ = multipletests(p[ok], alpha=alpha, method="holm")
        reject[ok] = r
        adjusted[ok] = adj
    return reject, adjusted


# --------------------------------------------------------------------------- ASO


def _violation_ratio(a_sorted: np.ndarray, b_sorted: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """ε_W2 of A over B for rows of sorted samples: the share of the squared quantile gap
    ∫(F⁻¹ − G⁻¹)² where A's quantile lies below B's (del Barrio et al. 2018; Dror et al. 2019).
    Identical quantile functions give 0.5: no evidence either way.
    """
    n, m = a_sorted.shape[-1], b_sorted.shape[-1]
    qa = np.take(a_sorted, np.minimum((grid * n).astype(np.int64), n - 1), axis=-1)
    qb = np.take(b_sorted, np.minimum((grid * m).astype(np.int64), m - 1), axis=-1)
    gap = qa - qb
    total = (gap * gap).sum(-1)
    below = (np.minimum(gap, 0.0) ** 2).sum(-1)
    return np.where(total > 0, below / np.where(total > 0, total, 1.0), 0.5)


def aso_epsilon(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    *,
    confidence: float = 0.95,
    n_boot: int = 1000,
    dt: float = 0.005,
    seed: int = 0,
) -> float:
    """Almost Stochastic Order ε_min of A over B (higher scores better), in [0, 1].

    ε_min < 0.5 means A is almost stochastically larger than B (the smaller, the stronger; 0 is
    plain stochastic dominance). ε_min is the upper one-sided ``confidence`` bound of the
    violation ratio, its spread estimated by bootstrapping both score sets (the ASO test of Dror
    et al. 2019 as in ``deepsig``, vectorised here: deepsig took ~35 s per call on this machine,
    too slow for one call per table cell).
    """
    a = np.sort(np.asarray(scores_a, dtype=np.float64))
    b = np.sort(np.asarray(scores_b, dtype=np.float64))
    if a.size < 2 or b.size < 2:
        raise ConfigError("ASO needs at least two scores per model")
    grid = np.arange(dt / 2, 1.0, dt)
    eps = float(_violation_ratio(a, b, grid))
    rng = np.random.default_rng(seed)
    boot_a = np.sort(rng.choice(a, size=(n_boot, a.size), replace=True), axis=-1)
    boot_b = np.sort(rng.choice(b, size=(n_boot, b.size), replace=True), axis=-1)
    reps = _violation_ratio(boot_a, boot_b, grid)
    const = math.sqrt(a.size * b.size / (a.size + b.size))
    sigma = float(np.std(const * (reps - eps)))
    z = float(sps.norm.ppf(confidence))
    return float(np.clip(eps + z * sigma / const, 0.0, 1.0))


# --------------------------------------------------------------------------- ranks


@dataclass(frozen=True)
class RankResult:
    """Friedman test over blocks (cells) and the Nemenyi critical difference of mean ranks."""

    models: tuple[str, ...]
    mean_ranks: tuple[float, ...]
    """Average rank per model (1 = best)."""
    n_blocks: int
    friedman_p: float
    critical_difference: float
    alpha: float


def friedman_nemenyi(
    models: Sequence[str], values: np.ndarray, higher_is_better: bool = True, alpha: float = 0.05
) -> RankResult:
    """Rank ``values`` (blocks × models; rank 1 = best), Friedman χ² test, Nemenyi CD.

    CD = q_α · sqrt(k(k+1) / (6N)) with q_α the studentized-range quantile / √2 (Demšar 2006).
    Blocks with a nan are dropped.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v).all(axis=1)]
    k = v.shape[1]
    if k < 3:
        raise ConfigError("a critical-difference diagram needs at least 3 models")
    if v.shape[0] < 2:
        raise ConfigError("a critical-difference diagram needs at least 2 complete cells")
    ranks = sps.rankdata(-v if higher_is_better else v, axis=1)
    friedman_p = float(sps.friedmanchisquare(*v.T).pvalue)
    q = float(sps.studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    cd = q * math.sqrt(k * (k + 1) / (6.0 * v.shape[0]))
    return RankResult(tuple(models), tuple(ranks.mean(0)), v.shape[0], friedman_p, cd, alpha)
