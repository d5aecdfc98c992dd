"""Classification metrics, from true labels and predicted probabilities."""

from __future__ import annotations

import numpy as np

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
"""The metrics a run can tune and monitor (``decision.metric``, ``trainer.monitor``): the config
reads them from here."""
# The choosable metrics, plus calibration error.
METRIC_NAMES = (*METRICS, "ece")


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: the confidence-weighted gap between confidence and accuracy."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def score(y_true: np.ndarray, y_pred: np.ndarray, metric: str) -> float:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score  # slow to import: not for config

    if metric == "accuracy":
        return float(accuracy_score(y_true, y_pred))
    if metric == "balanced_accuracy":
        return float(balanced_accuracy_score(y_true, y_pred))
    if metric == "macro_f1":
        # Averaged over the classes present in truth or prediction, as sklearn does.
        return float(f1_score(y_true, y_pred, average="macro", zero_division=0))
    raise ValueError(f"unknown metric {metric}")


def confusion_matrices(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(m, k, k) confusion matrices (rows: truth) of m label vectors: ``y_pred`` is (m, n),
    ``y_true`` is (n,) or (m, n)."""
    y_true = np.broadcast_to(y_true, y_pred.shape)
    m = y_pred.shape[0]
    flat = (np.arange(m)[:, None] * k * k + y_true * k + y_pred).ravel()
    return np.bincount(flat, minlength=m * k * k).reshape(m, k, k).astype(float)


def confusion_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """The choosable metrics of each of a stack of confusion matrices, with the same
    definitions as ``score`` (sklearn's): fast enough to score thousands of candidate rules."""
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(axis=2), cm.sum(axis=1)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, tp / support, 0.0)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    return {
        "accuracy": tp.sum(axis=1) / cm.sum(axis=(1, 2)),
        "balanced_accuracy": recall.sum(axis=1) / present.sum(axis=1),
        "macro_f1": f1.sum(axis=1) / ((support + predicted) > 0).sum(axis=1),
    }


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    y_true = np.asarray(y_true)
    y_pred = probs.argmax(axis=1)
    out = {m: score(y_true, y_pred, m) for m in METRICS}
    out["ece"] = expected_calibration_error(y_true, probs)
    out["n"] = int(len(y_true))
    return out
