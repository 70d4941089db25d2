"""Tests for mer_bench.metrics: hand-computed cases, properties, and independent cross-checks."""

from __future__ import annotations

import importlib.util
import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from mer_bench.errors import AdapterError, ConfigError, DataError, ProtocolError
from mer_bench.metrics import (
    auilc,
    best_value,
    classification_metrics,
    compute_metrics,
    compute_metrics_stack,
    higher_is_better,
    improves,
    mean_sd,
    oracle_per_metric,
    regression_metrics,
    select_knob,
    weighted_f1,
)
from mer_bench.protocol import RATES, TASK_INFO, Task

FAST = settings(max_examples=60, deadline=None)
KNOBS = tuple(round(k / 10, 1) for k in range(31))  # a τ-like grid 0.0 … 3.0
HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


def naive_weighted_f1(y_true: list, y_pred: list) -> float:
    """Independent oracle: per-label precision/recall/F1 in plain Python, weighted by support."""
    labels = sorted(set(y_true) | set(y_pred))
    total = 0.0
    for label in labels:
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == label and p == label)
        n_pred = sum(1 for p in y_pred if p == label)
        n_true = sum(1 for t in y_true if t == label)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        total += f1 * n_true
    return total / len(y_true)


def one_hot_scores(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes)[labels]


def random_case(seed: int, n: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Coarse integer scores make argmax ties frequent, which exercises tie-breaking too.
    return rng.integers(0, 4, size=(n, num_classes)).astype(np.float64), rng.integers(
        0, num_classes, size=n
    )


# --------------------------------------------------------------------------------- weighted F1


def test_weighted_f1_hand_case() -> None:
    # true [0,0,0,1], pred [0,1,1,2]; labels {0,1,2}.
    # label 0: TP=1, support 3, predicted 1 -> F1 = 2/(3+1) = 0.5, weight 3
    # label 1: TP=0 -> F1 = 0, weight 1
    # label 2: predicted only -> weight 0
    # weighted = (0.5*3 + 0*1 + 0*0) / 4 = 0.375
    assert weighted_f1(np.array([0, 0, 0, 1]), np.array([0, 1, 1, 2])) == pytest.approx(0.375)


def test_weighted_f1_perfect_and_disjoint() -> None:
    y = np.array([3, 1, 1, 7, 3])
    assert weighted_f1(y, y) == 1.0
    assert weighted_f1(np.array([0, 0, 1]), np.array([1, 1, 0])) == 0.0


def test_weighted_f1_empty_is_nan_and_length_mismatch_raises() -> None:
    assert math.isnan(weighted_f1(np.array([], dtype=int), np.array([], dtype=int)))
    with pytest.raises(ValueError):
        weighted_f1(np.array([0, 1]), np.array([0]))


@FAST
@given(
    st.lists(st.tuples(st.integers(-2, 4), st.integers(-2, 4)), min_size=1, max_size=40),
)
def test_weighted_f1_matches_naive_oracle(pairs: list[tuple[int, int]]) -> None:
    y_true = [t for t, _ in pairs]
    y_pred = [p for _, p in pairs]
    assert weighted_f1(np.array(y_true), np.array(y_pred)) == pytest.approx(
        naive_weighted_f1(y_true, y_pred), abs=1e-12
    )


@FAST
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=30))
def test_weighted_f1_on_bool_labels_matches_oracle(pairs: list[tuple[bool, bool]]) -> None:
    y_true = [t for t, _ in pairs]
    y_pred = [p for _, p in pairs]
    assert weighted_f1(np.array(y_true), np.array(y_pred)) == pytest.approx(
        naive_weighted_f1(y_true, y_pred), abs=1e-12
    )


@pytest.mark.skipif(not HAS_SKLEARN, reason="sklearn not installed")
def test_weighted_f1_matches_sklearn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        y_true = rng.integers(0, 5, size=n)
        y_pred = rng.integers(0, 5, size=n)
        expected = f1_score(y_true, y_pred, average="weighted", zero_division=0)
        assert weighted_f1(y_true, y_pred) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------------- binary


def test_binary_hand_case_has0_and_non0_differ() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    scores = np.array(
        [
            [0.6, 0.3, 0.1],  # neg: 3-way 0 (right);  has0: 0.1 < 0.6 -> neg (right)
            [0.2, 0.5, 0.3],  # neg: 3-way 1 (wrong);  has0: 0.3 > 0.2 -> non-neg (wrong)
            [0.5, 0.4, 0.1],  # neu: 3-way 0 (wrong);  has0: neg, truth non-neg (wrong)
            [0.1, 0.6, 0.3],  # neu: 3-way 1 (right);  has0: non-neg (right)
            [0.1, 0.7, 0.2],  # pos: 3-way 1 (wrong);  has0: non-neg (right)
            [0.1, 0.2, 0.7],  # pos: 3-way 2 (right);  has0: non-neg (right)
        ]
    )
    m = classification_metrics(Task.BINARY, scores, labels)
    # Has0: truth [0,0,1,1,1,1], pred [0,1,0,1,1,1] -> 4/6 right.
    # F1: label 0 TP1 sup2 pred2 -> 0.5; label 1 TP3 sup4 pred4 -> 0.75; (0.5*2+0.75*4)/6 = 2/3.
    assert m["has0_acc2"] == pytest.approx(2 / 3)
    assert m["has0_f1"] == pytest.approx(2 / 3)
    # Non0: neutral truths (rows 2, 3) dropped; truth [0,0,2,2], pred [0,1,1,2] -> 2/4 right.
    # F1: label 0 TP1 sup2 pred1 -> 2/3; label 1 weight 0; label 2 TP1 sup2 pred1 -> 2/3
    # -> (2/3*2 + 2/3*2)/4 = 2/3. Predicted-neutral rows 1 and 4 count as wrong here, while
    # has0 (which ignores the neutral column) called row 4 right: the two protocols differ.
    assert m["non0_acc2"] == pytest.approx(0.5)
    assert m["non0_f1"] == pytest.approx(2 / 3)
    # 3-way: pred [0,1,0,1,1,2] vs [0,0,1,1,2,2] -> rows 0,3,5 right = 0.5.
    # F1: label 0 TP1 sup2 pred2 -> 1/2; label 1 TP1 sup2 pred3 -> 2/5; label 2 TP1 sup2 pred1
    # -> 2/3; equal supports -> (1/2 + 2/5 + 2/3)/3 = 47/90.
    assert m["acc3"] == pytest.approx(0.5)
    assert m["f1_3"] == pytest.approx(47 / 90)
    assert list(m) == list(TASK_INFO[Task.BINARY].metrics)


def test_argmax_ties_go_to_lowest_index() -> None:
    labels = np.array([0, 1, 2, 2])
    scores = np.ones((4, 3))  # every row a three-way tie -> predict 0 (negative)
    m = classification_metrics(Task.BINARY, scores, labels)
    assert m["acc3"] == pytest.approx(0.25)
    # has0 tie between neg and pos columns -> negative; only row 0 is truly negative.
    assert m["has0_acc2"] == pytest.approx(0.25)
    assert m["non0_acc2"] == pytest.approx(1 / 3)
    # A tie only between the neutral and positive column -> neutral (index 1).
    tie = np.array([[0.0, 1.0, 1.0]])
    assert classification_metrics(Task.BINARY, tie, np.array([1]))["acc3"] == 1.0
    seven = np.zeros((2, 7))
    seven[:, [3, 5]] = 1.0
    assert classification_metrics(Task.SEVEN, seven, np.array([3, 5]))["acc7"] == 0.5


def test_non0_is_nan_when_all_truths_neutral() -> None:
    m = classification_metrics(Task.BINARY, np.eye(3), np.array([1, 1, 1]))
    assert math.isnan(m["non0_acc2"]) and math.isnan(m["non0_f1"])
    assert m["acc3"] == pytest.approx(1 / 3)


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 50))
def test_binary_properties(seed: int, n: int) -> None:
    scores, labels = random_case(seed, n, 3)
    m = classification_metrics(Task.BINARY, scores, labels)
    for value in m.values():
        assert math.isnan(value) or 0.0 <= value <= 1.0

    # Invariant to a permutation of the samples (counts are exact, so equality is exact).
    perm = np.random.default_rng(seed + 1).permutation(n)
    m_perm = classification_metrics(Task.BINARY, scores[perm], labels[perm])
    assert m_perm == pytest.approx(m, nan_ok=True)

    # has0 ignores the neutral column entirely.
    altered = scores.copy()
    altered[:, 1] = np.random.default_rng(seed + 2).normal(size=n) * 100
    m_alt = classification_metrics(Task.BINARY, altered, labels)
    assert (m_alt["has0_acc2"], m_alt["has0_f1"]) == (m["has0_acc2"], m["has0_f1"])

    # non0 counts a predicted neutral as wrong: make neutral win everywhere.
    neutral = scores.copy()
    neutral[:, 1] = scores.max() + 1.0
    m_neu = classification_metrics(Task.BINARY, neutral, labels)
    if (labels != 1).any():
        assert m_neu["non0_acc2"] == 0.0 and m_neu["non0_f1"] == 0.0
    assert m_neu["acc3"] == pytest.approx(np.mean(labels == 1))

    # Accuracy agrees with a direct count.
    assert m["acc3"] == pytest.approx(np.mean(np.argmax(scores, axis=1) == labels))


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 50), st.sampled_from([Task.BINARY, Task.SEVEN]))
def test_perfect_classification_scores_one(seed: int, n: int, task: Task) -> None:
    num_classes = TASK_INFO[task].num_classes
    assert num_classes is not None
    labels = np.random.default_rng(seed).integers(0, num_classes, size=n)
    scores = one_hot_scores(labels, num_classes) * 5.0 - 1.0
    if task is Task.BINARY:
        # A "perfect" neutral row must still lean positive for has0, whose argmax ignores the
        # neutral column: with neg == pos the tie goes to negative (see the test below).
        scores[labels == 1, 2] += 0.5
    m = compute_metrics(task, scores, labels)
    for name, value in m.items():
        if name.startswith("non0") and not (labels != 1).any():
            assert math.isnan(value)
        else:
            assert value == 1.0, name


def test_has0_neutral_prediction_with_neg_pos_tie_counts_negative() -> None:
    # A one-hot neutral prediction ties the neg and pos columns; has0's two-column argmax sends
    # the tie to index 0 (negative), so a correct 3-way neutral is a has0 error.
    m = classification_metrics(Task.BINARY, np.eye(3), np.array([0, 1, 2]))
    assert m["acc3"] == 1.0
    assert m["has0_acc2"] == pytest.approx(2 / 3)


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(1, 60))
def test_seven_properties(seed: int, n: int) -> None:
    scores, labels = random_case(seed, n, 7)
    m = classification_metrics(Task.SEVEN, scores, labels)
    pred = np.argmax(scores, axis=1)
    assert m["acc7"] == pytest.approx(np.mean(pred == labels))
    assert m["f1_7"] == pytest.approx(naive_weighted_f1(labels.tolist(), pred.tolist()))
    perm = np.random.default_rng(seed + 1).permutation(n)
    assert classification_metrics(Task.SEVEN, scores[perm], labels[perm]) == m


def test_float_labels_accepted_and_bad_inputs_rejected() -> None:
    scores = np.eye(3)
    as_float = classification_metrics(Task.BINARY, scores, np.array([0.0, 1.0, 2.0]))
    assert as_float == classification_metrics(Task.BINARY, scores, np.array([0, 1, 2]))
    with pytest.raises(DataError, match=r"integers in 0\.\.2"):
        classification_metrics(Task.BINARY, scores, np.array([0, 1, 3]))
    with pytest.raises(DataError, match="non-integer"):
        classification_metrics(Task.BINARY, scores, np.array([0, 1.5, 2]))
    with pytest.raises(DataError, match=r"integers in 0\.\.2"):
        classification_metrics(Task.BINARY, scores, np.array([0, -1, 2]))
    with pytest.raises(AdapterError, match=r"shape \(N, 7\)"):
        classification_metrics(Task.SEVEN, scores, np.array([0, 1, 2]))
    with pytest.raises(AdapterError, match="3 score rows but 2 labels"):
        classification_metrics(Task.BINARY, scores, np.array([0, 1]))
    with pytest.raises(AdapterError, match="NaN in 1 of 3"):
        nan_row = np.array([[np.nan, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        classification_metrics(Task.BINARY, nan_row, np.arange(3))
    with pytest.raises(DataError, match="empty"):
        classification_metrics(Task.BINARY, np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ProtocolError):
        classification_metrics(Task.REGRESSION, scores, np.array([0, 1, 2]))


# --------------------------------------------------------------------------------- regression


def test_regression_hand_case() -> None:
    truth = np.array([-1.0, 0.0, 0.0, 2.0])
    pred = np.array([-0.5, 0.0, -0.1, 0.0])
    m = regression_metrics(pred, truth)
    # has0: t>=0 [F,T,T,T] vs p>=0 [F,T,F,T] -> 3/4; a prediction of exactly 0 is non-negative.
    # F1: False TP1 sup1 pred2 -> 2/3; True TP2 sup3 pred2 -> 4/5; (2/3 + 4/5*3)/4 = 23/30.
    assert m["has0_acc2"] == pytest.approx(0.75)
    assert m["has0_f1"] == pytest.approx(23 / 30)
    # non0: rows with t != 0 are 0 and 3; t>0 [F,T] vs p>0 [F,F] (0 is not positive) -> 1/2.
    # F1: False TP1 sup1 pred2 -> 2/3; True TP0 -> 0; (2/3*1 + 0)/2 = 1/3.
    assert m["non0_acc2"] == pytest.approx(0.5)
    assert m["non0_f1"] == pytest.approx(1 / 3)
    assert m["mae"] == pytest.approx((0.5 + 0.0 + 0.1 + 2.0) / 4)
    # seven: t -> [-1,0,0,2], p -> [-0 (-0.5 rounds to even 0), 0, 0, 0] -> rows 1, 2 right.
    assert m["acc7"] == pytest.approx(0.5)


def test_acc5_hand_case() -> None:
    """Acc-5 (MMSA's Mult_acc_5): clip both sides to [-2, 2], round half to even, compare."""
    truth = np.array([-3.0, -1.4, 0.4, 1.6, 2.9, -0.6, 2.0])
    pred = np.array([-2.6, -0.5, 0.5, 2.5, 1.4, -1.5, 7.0])
    # truth -> [-2, -1, 0, 2, 2, -1, 2]; pred -> [-2 (clipped), -0 (half to even), 0 (even),
    # 2 (clipped, not 3), 1, -2 (half to even), 2 (clipped)] -> rows 0, 2, 3, 6 agree: 4/7.
    m = regression_metrics(pred, truth)
    assert m["acc5"] == pytest.approx(4 / 7)
    # Acc-7 differs on the same data: its wider clip keeps -3 and 3 apart from -2 and 2.
    # truth7 [-3,-1,0,2,3,-1,2] vs pred7 [-3,-0,0,2,1,-2,3] -> rows 0, 2, 3: 3/7.
    assert m["acc7"] == pytest.approx(3 / 7)
    assert regression_metrics(truth, truth)["acc5"] == 1.0


def test_seven_rounding_at_halves() -> None:
    truth = np.array([-2.0, 0.0, 2.0, -3.0, 3.0, 2.0])
    # Halves round to even; values beyond ±3 clip first.
    pred = np.array([-2.5, 0.5, 2.5, -7.0, 3.4, 1.5])
    assert regression_metrics(pred, truth)["acc7"] == 1.0
    # Rounding half away from zero would give -3, 1, 3, and 1.5 -> 2 is still even; the same
    # predictions compared with those values must miss.
    off = regression_metrics(pred, np.array([-3.0, 1.0, 3.0, -3.0, 3.0, 2.0]))
    assert off["acc7"] == pytest.approx(3 / 6)
    # The truth side is clipped and rounded the same way.
    assert regression_metrics(np.array([-2.0, 0.0, 2.0]), np.array([-2.5, 0.5, 2.5]))["acc7"] == 1


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(3, 80))
def test_regression_matches_scipy_and_is_permutation_invariant(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    truth = np.round(rng.uniform(-3, 3, size=n) * 3) / 3  # includes exact zeros sometimes
    truth[rng.random(n) < 0.2] = 0.0
    pred = truth * rng.uniform(-1, 2) + rng.normal(scale=1.0, size=n)
    m = regression_metrics(pred, truth)
    if np.ptp(truth) > 0:
        assert m["corr"] == pytest.approx(stats.pearsonr(pred, truth)[0], abs=1e-9)
    else:
        assert m["corr"] == 0.0
    assert m["mae"] == pytest.approx(np.mean(np.abs(pred - truth)))
    nz = truth != 0
    if nz.any():
        assert m["non0_acc2"] == pytest.approx(np.mean((truth[nz] > 0) == (pred[nz] > 0)))
    else:
        assert math.isnan(m["non0_acc2"])
    for name in ("has0_acc2", "has0_f1", "acc7", "f1_7"):
        assert 0.0 <= m[name] <= 1.0
    perm = rng.permutation(n)
    assert regression_metrics(pred[perm], truth[perm]) == pytest.approx(m, nan_ok=True)


def test_regression_perfect_and_constant() -> None:
    truth = np.array([-2.6, -1.0, 0.0, 0.4, 1.5, 3.0])
    m = regression_metrics(truth.copy(), truth)
    assert m["mae"] == 0.0 and m["corr"] == pytest.approx(1.0)
    for name in ("has0_acc2", "has0_f1", "non0_acc2", "non0_f1", "acc7", "f1_7"):
        assert m[name] == 1.0, name
    # Constant predictions: Pearson is undefined, reported as 0.0 (documented).
    assert regression_metrics(np.full(6, 0.7), truth)["corr"] == 0.0
    assert regression_metrics(truth, np.full(6, 1.0))["corr"] == 0.0
    # (N, 1) predictions are accepted.
    assert regression_metrics(truth[:, None], truth)["mae"] == 0.0


def test_regression_bad_inputs() -> None:
    with pytest.raises(AdapterError, match="2 predictions but 3 labels"):
        regression_metrics(np.zeros(2), np.zeros(3))
    with pytest.raises(AdapterError, match="shape"):
        regression_metrics(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(AdapterError, match="NaN"):
        regression_metrics(np.array([0.0, np.nan]), np.zeros(2))
    with pytest.raises(DataError, match="empty"):
        regression_metrics(np.zeros(0), np.zeros(0))


# --------------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize("task", list(Task))
def test_compute_metrics_returns_exactly_task_metrics(task: Task) -> None:
    rng = np.random.default_rng(3)
    num_classes = TASK_INFO[task].num_classes
    if num_classes is None:
        labels = rng.uniform(-3, 3, size=20)
        scores = labels + rng.normal(size=20)
        expected = regression_metrics(scores, labels)
    else:
        labels = rng.integers(0, num_classes, size=20)
        scores = rng.normal(size=(20, num_classes))
        expected = classification_metrics(task, scores, labels)
    m = compute_metrics(task, scores, labels)
    assert tuple(m) == TASK_INFO[task].metrics
    assert m == {k: expected[k] for k in TASK_INFO[task].metrics}
    assert all(isinstance(v, float) for v in m.values())


# --------------------------------------------------------------------------------- AUILC, sd


@FAST
@given(st.floats(0.0, 1.0))
def test_auilc_constant_is_constant(c: float) -> None:
    assert auilc([c] * len(RATES)) == pytest.approx(c)


def test_auilc_linear_decay_and_hand_case() -> None:
    assert auilc([1.0 - r for r in RATES]) == pytest.approx(0.5)
    # Custom rates: trapezoids (1+0)/2*0.5 + (0+1)/2*0.5 = 0.5; (0.2+0.4)/2*0.25 = 0.075.
    assert auilc([1.0, 0.0, 1.0], rates=[0.0, 0.5, 1.0]) == pytest.approx(0.5)
    assert auilc([0.2, 0.4], rates=[0.0, 0.25]) == pytest.approx(0.075)
    assert math.isnan(auilc([0.5] * 10 + [math.nan]))
    with pytest.raises(ProtocolError, match="one value per rate"):
        auilc([0.5] * 10)
    with pytest.raises(ProtocolError, match="increasing"):
        auilc([0.5, 0.5], rates=[0.5, 0.5])


@FAST
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=12))
def test_mean_sd_is_sample_sd(values: list[float]) -> None:
    mean, sd = mean_sd(values)
    assert mean == pytest.approx(statistics.fmean(values), abs=1e-9)
    assert sd == pytest.approx(statistics.stdev(values), abs=1e-6)


def test_mean_sd_small_n() -> None:
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)  # ddof=1: sqrt(2/2); ddof=0 would be 0.816
    mean, sd = mean_sd([0.7])
    assert mean == 0.7 and math.isnan(sd)
    mean, sd = mean_sd([])
    assert math.isnan(mean) and math.isnan(sd)


# --------------------------------------------------------------------------------- knobs


def test_metric_direction_and_best_value() -> None:
    assert not higher_is_better("mae") and higher_is_better("acc7") and higher_is_better("corr")
    assert best_value([0.2, math.nan, 0.5], "acc7") == 0.5
    assert best_value([0.2, math.nan, 0.5], "mae") == 0.2
    assert best_value([math.nan], "acc7") == -math.inf and best_value([], "mae") == math.inf
    assert improves(0.6, 0.5, "acc7") and not improves(0.6, 0.5, "mae")
    assert not improves(0.5, 0.5, "acc7") and not improves(math.nan, -math.inf, "acc7")
    assert improves(0.4, math.inf, "mae")
    # the direction comes from the metric unless given
    assert select_knob({0.0: {"mae": 0.6}, 0.1: {"mae": 0.5}}, "mae") == 0.1
    assert select_knob({0.0: {"acc7": 0.6}, 0.1: {"acc7": 0.5}}, "acc7") == 0.0


def test_select_knob_ties_and_direction() -> None:
    cands = {
        0.2: {"acc": 0.8, "mae": 0.5},
        0.0: {"acc": 0.8, "mae": 0.6},
        0.1: {"acc": 0.7, "mae": 0.5},
        0.3: {"acc": 0.8, "mae": 0.9},
    }
    # acc ties at 0.0, 0.2, 0.3 -> smallest knob, regardless of mapping order.
    assert select_knob(cands, "acc", maximise=True) == 0.0
    # mae ties (lowest) at 0.1 and 0.2 -> 0.1.
    assert select_knob(cands, "mae", maximise=False) == 0.1
    assert select_knob({1.0: {"acc": 0.6}, 2.0: {"acc": 0.61}}, "acc", True) == 2.0


def test_select_knob_nan_and_errors() -> None:
    assert select_knob({0.0: {"m": math.nan}, 0.5: {"m": 0.1}}, "m", True) == 0.5
    assert select_knob({0.0: {"m": math.nan}, 0.5: {"m": 0.1}}, "m", False) == 0.5
    assert select_knob({0.4: {"m": math.nan}, 0.2: {"m": math.nan}}, "m", True) == 0.2
    with pytest.raises(ConfigError, match="no knob candidates"):
        select_knob({}, "m", True)
    with pytest.raises(ConfigError, match="'x' is not among"):
        select_knob({0.0: {"m": 1.0}}, "x", True)


@FAST
@given(st.dictionaries(st.sampled_from(KNOBS), st.integers(0, 3).map(lambda k: k / 4), min_size=1))
def test_select_knob_picks_smallest_of_best(table: dict[float, float]) -> None:
    cands = {k: {"m": v} for k, v in table.items()}
    best = max(table.values())
    assert select_knob(cands, "m", True) == min(k for k, v in table.items() if v == best)
    worst = min(table.values())
    assert select_knob(cands, "m", False) == min(k for k, v in table.items() if v == worst)


def test_oracle_per_metric_picks_each_metric_independently() -> None:
    base = dict.fromkeys(TASK_INFO[Task.REGRESSION].metrics, 0.5)
    cands = {
        0.0: {**base, "non0_acc2": 0.7, "mae": 0.9},
        0.5: {**base, "non0_acc2": 0.8, "mae": 0.8, "corr": 0.6},
        1.0: {**base, "non0_acc2": 0.6, "mae": 0.7, "corr": 0.6},
    }
    best, chosen = oracle_per_metric(cands, Task.REGRESSION)
    assert tuple(best) == TASK_INFO[Task.REGRESSION].metrics == tuple(chosen)
    assert (best["non0_acc2"], chosen["non0_acc2"]) == (0.8, 0.5)
    assert (best["mae"], chosen["mae"]) == (0.7, 1.0)  # minimised
    assert (best["corr"], chosen["corr"]) == (0.6, 0.5)  # tie -> smaller knob
    assert (best["acc7"], chosen["acc7"]) == (0.5, 0.0)  # all tied -> τ = 0


def test_oracle_on_a_real_tau_sweep_never_below_tau_zero() -> None:
    rng = np.random.default_rng(7)
    n = 200
    labels = rng.integers(0, 3, size=n)
    log_p = np.log(rng.dirichlet(np.ones(3), size=n))
    log_p[np.arange(n), labels] += 0.5
    log_pcf = np.log(rng.dirichlet(np.ones(3), size=n))
    cands = {tau: compute_metrics(Task.BINARY, log_p - tau * log_pcf, labels) for tau in KNOBS}
    best, chosen = oracle_per_metric(cands, Task.BINARY)
    for name, value in best.items():
        assert value >= cands[0.0][name]
        assert value == max(c[name] for c in cands.values())
        assert cands[chosen[name]][name] == value


@FAST
@given(
    task=st.sampled_from([Task.BINARY, Task.SEVEN, Task.REGRESSION]),
    n=st.integers(1, 40),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    coarse=st.booleans(),
)
def test_stacked_metrics_equal_one_at_a_time(
    task: Task, n: int, k: int, seed: int, coarse: bool
) -> None:
    """compute_metrics_stack (the τ grid in one go) equals compute_metrics per candidate,
    including argmax ties (coarse integer scores), missing classes and an all-neutral truth."""
    rng = np.random.default_rng(seed)
    classes = TASK_INFO[task].num_classes
    if task is Task.REGRESSION:
        labels = rng.uniform(-3, 3, n).round(1)
        stack = [rng.uniform(-3, 3, n) for _ in range(k)]
    else:
        labels = rng.integers(0, rng.integers(1, classes + 1), n)
        shape = (n, classes)
        stack = [
            rng.integers(0, 2, shape).astype(float) if coarse else rng.normal(size=shape)
            for _ in range(k)
        ]
    got = compute_metrics_stack(task, stack, labels)
    assert len(got) == k
    for scores, row in zip(stack, got, strict=True):
        want = compute_metrics(task, scores, labels)
        assert list(row) == list(want)
        for name, value in want.items():
            if math.isnan(value):
                assert math.isnan(row[name]), name
            else:
                assert row[name] == pytest.approx(value, abs=1e-12), name


def test_stacked_metrics_check_their_inputs() -> None:
    good = np.zeros((3, 3))
    with pytest.raises(AdapterError):
        compute_metrics_stack(Task.BINARY, [good, np.full((3, 3), np.nan)], np.array([0, 1, 2]))
    with pytest.raises(DataError):
        compute_metrics_stack(Task.BINARY, [good, good], np.array([0, 1, 3]))
