import numpy as np
import pytest
from scipy.special import softmax

from galaxytune.decision import (
    DecisionRule,
    fit_decision_rule,
    fit_multilabel_thresholds,
    fit_offsets,
    fit_temperature,
    search_offsets,
)
from galaxytune.evaluation.metrics import classification_metrics, expected_calibration_error, score


def _calibrated_logits(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true class distribution (so T=1 is right)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, k))
    y = np.array([rng.choice(k, p=p) for p in softmax(logits, axis=1)])
    return logits, y


def test_temperature_recovers_overconfidence():
    logits, y = _calibrated_logits(4000, 4, 0)
    assert fit_temperature(logits * 3.0, y) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(logits, y) == pytest.approx(1.0, rel=0.1)


def test_offsets_fix_a_prior_shift_and_keep_probabilities_consistent():
    logits, y = _calibrated_logits(3000, 3, 1)
    shifted = logits + np.array([2.0, 0.0, 0.0])  # the model over-predicts class 0
    rule = fit_decision_rule(shifted, y, "balanced_accuracy", temperature=False)
    before = classification_metrics(y, softmax(shifted, axis=1))["balanced_accuracy"]
    after = classification_metrics(y, rule.probabilities(shifted))["balanced_accuracy"]
    assert after > before + 0.05
    assert rule.offsets[0] < min(rule.offsets[1:])
    assert np.array_equal(rule.probabilities(shifted).argmax(1), rule.adjusted_logits(shifted).argmax(1))


def test_offsets_stay_zero_when_nothing_is_gained():
    logits = np.array([[5.0, 0.0], [0.0, 5.0], [4.0, 1.0], [1.0, 4.0]])
    rule = fit_decision_rule(logits, np.array([0, 1, 0, 1]), "accuracy")
    assert rule.offsets == [0.0, 0.0]


def test_identity_rule_is_softmax():
    logits = np.random.default_rng(0).normal(size=(5, 3))
    assert np.allclose(DecisionRule().probabilities(logits), softmax(logits, axis=1))


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_not():
    y = np.array([0, 0, 0, 1])
    probs = np.array([[0.75, 0.25]] * 4)  # 75% confident, 75% right
    assert expected_calibration_error(y, probs) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([1, 1, 1, 1]), probs) == pytest.approx(0.75)


def _shifted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A model that over-predicts class 0 by 2 logits: offsets genuinely help."""
    logits, y = _calibrated_logits(n, 3, seed)
    return logits + np.array([2.0, 0.0, 0.0]), y


def test_fast_greedy_search_matches_a_plain_loop_over_sklearn_scores():
    logits, y = _shifted(150, 4)
    grid = np.linspace(-2, 2, 41)
    grid = grid[np.argsort(np.abs(grid), kind="stable")]
    slow, best = np.zeros(3), score(y, logits.argmax(1), "macro_f1")
    for _ in range(3):
        for c in range(3):
            for value in grid:
                trial = slow.copy()
                trial[c] = value
                s = score(y, (logits + trial).argmax(1), "macro_f1")
                if s > best + 1e-12:
                    best, slow = s, trial
    assert np.allclose(search_offsets(logits, y, "macro_f1", 2.0), slow - slow.mean())


def test_bagged_rule_finds_offsets_that_help_and_is_deterministic():
    logits, y = _shifted(600, 5)
    test_logits, y_test = _shifted(3000, 6)
    rule = fit_decision_rule(logits, y, "balanced_accuracy", temperature=False, seed=3)
    assert rule.offsets[0] < min(rule.offsets[1:]) - 1.0
    before = score(y_test, test_logits.argmax(1), "balanced_accuracy")
    assert score(y_test, rule.adjusted_logits(test_logits).argmax(1), "balanced_accuracy") > before + 0.05
    again = fit_decision_rule(logits, y, "balanced_accuracy", temperature=False, seed=3)
    assert again.offsets == rule.offsets


def test_bagged_rule_moves_offsets_less_than_greedy_on_pure_noise():
    """Bagging shrinks what only some resamples want; it cannot remove what the whole small
    sample wants by chance, so the offsets shrink (about 0.7x here) rather than vanish."""
    greedy, bagged = [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        logits, y = rng.normal(0, 1, (100, 5)), rng.integers(0, 5, 100)  # labels unrelated to logits
        greedy.append(np.abs(fit_offsets(logits, y, "macro_f1", 2.0, rule="greedy")).max())
        bagged.append(np.abs(fit_offsets(logits, y, "macro_f1", 2.0, rule="bagged", seed=seed)).max())
    assert np.mean(greedy) > 0.5  # the greedy rule fits the noise
    assert np.mean(bagged) < 0.8 * np.mean(greedy)


def test_two_class_rule_is_a_threshold_on_the_positive_probability():
    logits, y = _calibrated_logits(2000, 2, 7)
    logits = logits * 2.0 + np.array([1.0, 0.0])  # overconfident, and biased to class 0
    rule = fit_decision_rule(logits, y, "macro_f1")
    assert rule.threshold is not None and rule.threshold < 0.5
    p_positive = DecisionRule(rule.temperature).probabilities(logits)[:, 1]
    assert np.array_equal(rule.adjusted_logits(logits).argmax(1), (p_positive > rule.threshold).astype(int))
    saved = rule.to_dict()
    assert saved["threshold"] == rule.threshold and DecisionRule(**saved) == rule
    assert "threshold" not in DecisionRule(1.0, [0.0, 0.1, -0.1]).to_dict()


def _multilabel(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated sigmoid logits of 3 labels with 3%, 8% and 40% positives."""
    rng = np.random.default_rng(seed)
    prevalence = np.array([0.03, 0.08, 0.4])
    logits = rng.normal(np.log(prevalence / (1 - prevalence)), 1.5, (n, 3))
    labels = rng.random((n, 3)) < 1 / (1 + np.exp(-logits))
    return logits, labels


def _f1(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    tp = (pred & labels).sum(0)
    return 2 * tp / (pred.sum(0) + labels.sum(0))


def test_multilabel_thresholds_beat_one_half_for_rare_labels():
    logits, labels = _multilabel(3000, 8)
    test_logits, test_labels = _multilabel(20000, 9)
    thresholds = np.array(fit_multilabel_thresholds(logits, labels))
    assert (thresholds[:2] < 0.4).all()
    p = 1 / (1 + np.exp(-test_logits))
    tuned, default = _f1(p > thresholds, test_labels), _f1(p > 0.5, test_labels)
    assert (tuned[:2] > default[:2] + 0.03).all()
    assert tuned[2] > default[2] - 0.01
    assert fit_multilabel_thresholds(logits, labels, seed=1) == fit_multilabel_thresholds(logits, labels, seed=1)
