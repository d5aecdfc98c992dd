import numpy as np
import pytest
from scipy.special import softmax

from galaxytune.decision import DecisionRule, fit_decision_rule, fit_temperature
from galaxytune.evaluation.metrics import classification_metrics, expected_calibration_error


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
