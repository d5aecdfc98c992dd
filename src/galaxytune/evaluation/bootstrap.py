"""Bootstrap confidence intervals for the metrics, and paired bootstrap comparisons.

A test set of a few hundred galaxies gives accuracy to a few per cent at best; the intervals
say how sure a number is, and the paired comparison says whether one stage really beat
another on the same images (both are scored on each resample, so image difficulty cancels).
"""

from __future__ import annotations

import numpy as np

from galaxytune.evaluation.metrics import METRIC_NAMES, confusion_matrices, confusion_scores, expected_calibration_error

CI_METRICS = METRIC_NAMES


def _scores(y: np.ndarray, probs: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric on every resample; ``idx`` is (n_boot, n) row indices. Vectorised through
    per-resample confusion matrices, with the same definitions as sklearn's scores."""
    pred = probs.argmax(axis=1)
    out = confusion_scores(confusion_matrices(y[idx], pred[idx], probs.shape[1]))
    out["ece"] = np.array([expected_calibration_error(y[i], probs[i]) for i in idx])
    return out


def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_intervals(
    y: np.ndarray, probs: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile interval of each metric over ``n_boot`` resamples of the images."""
    scores = _scores(np.asarray(y), np.asarray(probs), _resamples(len(y), n_boot, seed))
    tail = (1 - level) / 2 * 100
    return {m: tuple(np.percentile(scores[m], [tail, 100 - tail]).tolist()) for m in CI_METRICS}


def paired_bootstrap(
    y: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, metric: str,
    n_boot: int = 1000, seed: int = 0, level: float = 0.95,
) -> dict[str, float]:
    """How much B beats A on ``metric``: the observed difference, its interval, and the share
    of resamples in which B does not beat A (a one-sided bootstrap p-value)."""
    y = np.asarray(y)
    idx = _resamples(len(y), n_boot, seed)
    full = np.arange(len(y))[None, :]
    a, b = _scores(y, probs_a, idx)[metric], _scores(y, probs_b, idx)[metric]
    observed = _scores(y, probs_b, full)[metric][0] - _scores(y, probs_a, full)[metric][0]
    diff = b - a
    if metric == "ece":  # lower is better: report the reduction
        diff, observed = -diff, -observed
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(diff, [tail, 100 - tail])
    p_not_better = float((diff <= 0).mean())
    return {"delta": float(observed), "ci_low": float(lo), "ci_high": float(hi), "p_not_better": p_not_better}
