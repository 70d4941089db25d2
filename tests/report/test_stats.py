from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from mer_bench.errors import ConfigError
from mer_bench.metrics import auilc, compute_metrics
from mer_bench.protocol import RATES, Task
from mer_bench.report.stats import (
    aso_epsilon,
    bootstrap_values,
    bootstrap_weights,
    compare,
    friedman_nemenyi,
    holm,
    metric_view,
    paired_permutation_test,
    seed_mean,
)


def _random_case(task: Task, rng: np.random.Generator, n: int = 80):
    if task is Task.REGRESSION:
        labels = np.round(rng.uniform(-3, 3, n) * 2) / 2  # includes exact zeros
        return labels, rng.normal(labels * 0.6, 1.0)
    k = task.info.num_classes
    return rng.integers(0, k, n).astype(np.float64), rng.random((n, k))


@pytest.mark.parametrize("task", list(Task))
def test_views_reproduce_compute_metrics(task: Task) -> None:
    rng = np.random.default_rng(3)
    labels, scores = _random_case(task, rng)
    expected = compute_metrics(task, scores, labels)
    for metric, value in expected.items():
        view = metric_view(task, metric, labels[None], scores[None])
        assert seed_mean(view)[0] == pytest.approx(value, abs=1e-12), metric


def test_unknown_metric_is_an_error() -> None:
    with pytest.raises(ConfigError, match="acc7"):
        metric_view(Task.BINARY, "acc7", np.zeros((1, 3)), np.zeros((1, 3, 3)))


def _acc_views(pred_a, pred_b, labels):
    scores = lambda p: np.eye(3)[p]  # noqa: E731
    va = metric_view(Task.BINARY, "acc3", labels, scores(pred_a))
    vb = metric_view(Task.BINARY, "acc3", labels, scores(pred_b))
    return va, vb


def test_identical_models_are_never_different() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (3, 100))
    pred = rng.integers(0, 3, (3, 100))
    va, vb = _acc_views(pred, pred.copy(), labels)
    comp = compare([va], [vb], n_resamples=999)
    assert comp.diff == 0.0 and comp.p_value == 1.0
    assert comp.ci_low == 0.0 and comp.ci_high == 0.0


def test_right_on_strictly_more_pairs_is_significant() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (3, 100))
    base = np.where(rng.random((3, 100)) < 0.5, labels, (labels + 1) % 3)
    better = base.copy()
    fix = (base != labels) & (rng.random((3, 100)) < 0.4)  # fixes some errors, breaks none
    better[fix] = labels[fix]
    va, vb = _acc_views(better, base, labels)
    comp = compare([va], [vb], n_resamples=1999)
    assert comp.diff == pytest.approx(fix.sum() / 300)
    assert comp.p_value == pytest.approx(1 / 2000)  # no resample reaches an all-positive sum
    assert 0 < comp.ci_low <= comp.diff <= comp.ci_high
    assert comp.aso_eps is not None and comp.aso_eps < 0.5


@pytest.mark.parametrize("metric", ["acc3", "f1_3"])
def test_permutation_p_matches_scipy(metric: str) -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, (1, 40))
    pa = np.where(rng.random((1, 40)) < 0.7, labels, (labels + 1) % 3)
    pb = np.where(rng.random((1, 40)) < 0.5, labels, (labels + 2) % 3)
    va = metric_view(Task.BINARY, metric, labels, np.eye(3)[pa])
    vb = metric_view(Task.BINARY, metric, labels, np.eye(3)[pb])
    diff, p = paired_permutation_test([va], [vb], n_resamples=20000, seed=1)

    def stat(x, y, axis):
        x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
        t = np.broadcast_to(labels[0], x.shape)
        w = np.ones(x.shape)
        from mer_bench.report.stats import metric_rows

        return metric_rows(va.kind, t, x, w, 3) - metric_rows(va.kind, t, y, w, 3)

    ref = sps.permutation_test(
        (pa[0], pb[0]),
        stat,
        permutation_type="samples",
        vectorized=True,
        n_resamples=20000,
        rng=np.random.default_rng(2),
    )
    assert diff == pytest.approx(float(ref.statistic))
    assert p == pytest.approx(ref.pvalue, abs=0.01)


def test_auilc_comparison_uses_the_trapezoid_over_rates() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, (3, 50))
    views_a, views_b = [], []
    for r in RATES:
        pa = np.where(rng.random((3, 50)) < 0.9 - 0.5 * r, labels, (labels + 1) % 3)
        pb = np.where(rng.random((3, 50)) < 0.8 - 0.5 * r, labels, (labels + 1) % 3)
        va, vb = _acc_views(pa, pb, labels)
        views_a.append(va)
        views_b.append(vb)
    diff, _ = paired_permutation_test(views_a, views_b, RATES, n_resamples=99)
    per_seed_a = np.stack([seed_mean(v) for v in views_a]).mean(1)
    per_seed_b = np.stack([seed_mean(v) for v in views_b]).mean(1)
    assert diff == pytest.approx(auilc(per_seed_a) - auilc(per_seed_b))
    weights = bootstrap_weights(3, 50, 200, np.random.default_rng(0))
    reps = bootstrap_values(views_a, weights, RATES)
    assert reps.shape == (200,)
    assert abs(np.median(reps) - auilc(per_seed_a)) < 0.05


def test_holm_on_a_known_p_vector() -> None:
    reject, adjusted = holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert reject.tolist() == [True, False, False, True]
    reject, adjusted = holm([0.01, math.nan])
    assert reject.tolist() == [True, False] and math.isnan(adjusted[1])


def test_aso_orders_distributions() -> None:
    low = [0.60, 0.61, 0.62]
    high = [0.70, 0.71, 0.72]
    assert aso_epsilon(high, low) == 0.0
    assert aso_epsilon(low, high) == 1.0
    mixed_a = [0.60, 0.70, 0.65, 0.66, 0.64]
    mixed_b = [0.61, 0.69, 0.655, 0.662, 0.645]
    eps = aso_epsilon(mixed_a, mixed_b, n_boot=500)
    assert 0.0 < eps <= 1.0
    with pytest.raises(ConfigError):
        aso_epsilon([0.5], [0.4, 0.3])


def test_friedman_nemenyi_matches_demsar_table() -> None:
    # Demšar (2006) Table 5: q_0.05 = 2.343 for k = 3 classifiers
    values = np.array([[0.9, 0.8, 0.7]] * 10 + [[0.8, 0.9, 0.7]] * 2)
    res = friedman_nemenyi(["a", "b", "c"], values)
    assert res.critical_difference == pytest.approx(2.343 * math.sqrt(3 * 4 / (6 * 12)), abs=1e-3)
    assert res.mean_ranks == pytest.approx((14 / 12, 22 / 12, 3.0))
    assert res.friedman_p < 0.001
    with pytest.raises(ConfigError, match="3 models"):
        friedman_nemenyi(["a", "b"], values[:, :2])
