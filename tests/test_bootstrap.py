import numpy as np
import pytest
from scipy.special import softmax

from galaxytune.evaluation.bootstrap import _scores, bootstrap_intervals, paired_bootstrap
from galaxytune.evaluation.metrics import classification_metrics


def _data(n=300, k=4, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, noise, (n, k))
    logits[np.arange(n), y] += 1.5
    return y, softmax(logits, axis=1)


def test_vectorised_scores_match_sklearn_definitions():
    y, probs = _data()
    probs[:, 3] = 0  # a class never predicted, as happens with rare classes
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(y), (5, len(y)))
    fast = _scores(y, probs, idx)
    for b in range(5):
        slow = classification_metrics(y[idx[b]], probs[idx[b]])
        for m in ("accuracy", "balanced_accuracy", "macro_f1", "ece"):
            assert fast[m][b] == pytest.approx(slow[m], abs=1e-12), m


def test_intervals_contain_the_estimate_and_shrink_with_more_data():
    y, probs = _data(200)
    small = bootstrap_intervals(y, probs)
    point = classification_metrics(y, probs)["accuracy"]
    assert small["accuracy"][0] < point < small["accuracy"][1]
    y, probs = _data(3000)
    large = bootstrap_intervals(y, probs)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(large["accuracy"]) < width(small["accuracy"]) / 2


def test_paired_bootstrap_tells_a_real_gain_from_none():
    y, probs = _data(500)
    better = probs.copy()
    wrong = better.argmax(1) != y
    better[np.flatnonzero(wrong)[:40]] = np.eye(probs.shape[1])[y[np.flatnonzero(wrong)[:40]]]
    real = paired_bootstrap(y, probs, better, "accuracy")
    assert real["delta"] == pytest.approx(40 / 500) and real["ci_low"] > 0 and real["p_not_better"] < 0.01
    same = paired_bootstrap(y, probs, probs, "macro_f1")
    assert same["delta"] == 0 and same["p_not_better"] == 1.0
