"""The decision rule: temperature scaling, then per-class logit offsets.

probabilities = softmax(logits / T + b). The temperature T is fitted on validation logits by
minimising the negative log-likelihood (it calibrates, and never changes the argmax); the
offsets b shift the class priors and are tuned on validation for the chosen metric. Both are
fitted on validation data only; their gain is measured on the test split.

Offsets tuned greedily on a small validation set chase its noise, so by default they are
bagged: the greedy search is run on stratified bootstrap resamples of validation and the
offsets averaged. An offset that only some resamples want is shrunk towards zero; one that all
want is kept (measured against other robust rules in docs/benchmarks.md).

Offsets tuned on validation always look good on validation. Whether they help is judged out
of bag: offsets fitted on each bootstrap resample are scored against no offsets on the
validation images that resample left out. They are kept only when, averaged over resamples,
they raise the tuned metric and do not lower accuracy by more than ``max_accuracy_drop``;
otherwise the rule is the temperature alone (which never changes a prediction).

For two classes the offsets are a threshold on p(class 1); for multi-label outputs
(independent sigmoids) ``fit_multilabel_thresholds`` tunes one threshold per class the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from galaxytune.evaluation.metrics import confusion_matrices, confusion_scores

OFFSET_RULES = ("bagged", "greedy")
"""How offsets are fitted (``decision.offset_rule``, see :func:`fit_offsets`): the config reads them from here."""

# scipy is imported where it is used: the config imports OFFSET_RULES, and must stay quick to load.


@dataclass
class OffsetCheck:
    """Out-of-bag judgement of tuned offsets against none, on validation."""

    metric: str
    metric_gain: float
    accuracy_change: float
    kept: bool
    score: float
    """The metric as the rule leaves it: without offsets on all of validation, plus their
    out-of-bag gain if they are kept. A score for comparing stages, where offsets fitted and
    scored on the same images would favour the logits whose offsets chase the most noise."""

    def describe(self) -> str:
        verdict = "kept" if self.kept else "dropped (the temperature alone is applied)"
        return (f"offsets {verdict}: out of bag on validation they changed {self.metric} by "
                f"{self.metric_gain:+.4f} and accuracy by {self.accuracy_change:+.4f}")


@dataclass
class DecisionRule:
    temperature: float = 1.0
    offsets: list[float] = field(default_factory=list)
    threshold: float | None = None
    """Two classes only: the rule predicts class 1 when the temperature-scaled p(class 1)
    exceeds this. Derived from the offsets (a value passed in, as from ``to_dict``, is
    recomputed); None for other class counts."""
    check: OffsetCheck | None = None
    """How the offsets were judged when fitted (None: not judged); not saved with the model."""

    def __post_init__(self) -> None:
        from scipy.special import expit

        b = self.offsets
        self.threshold = float(expit(b[0] - b[1])) if len(b) == 2 else None

    def adjusted_logits(self, logits: np.ndarray) -> np.ndarray:
        offsets = np.asarray(self.offsets) if self.offsets else 0.0
        return logits / self.temperature + offsets

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        from scipy.special import softmax

        return softmax(self.adjusted_logits(np.asarray(logits, dtype=np.float64)), axis=1)

    def to_dict(self) -> dict:
        out = {"temperature": self.temperature, "offsets": list(self.offsets)}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out

    def describe(self) -> str:
        text = f"T={self.temperature:.3f}, offsets={[round(o, 2) for o in self.offsets] or 'none'}"
        if self.threshold is not None:
            text += f" (class 1 when its temperature-scaled probability > {self.threshold:.3f})"
        return text


def cross_entropy(logits: np.ndarray, target: np.ndarray) -> float:
    """Mean cross-entropy of softmax(logits) to ``target``: class indices, or rows of class
    fractions (soft targets)."""
    from scipy.special import log_softmax

    target = np.eye(logits.shape[1])[target] if target.ndim == 1 else target
    return float(-(target * log_softmax(logits, axis=1)).sum(axis=1).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray, fractions: np.ndarray | None = None) -> float:
    """The T in [0.05, 20] that minimises validation NLL (searched on log T).

    With ``fractions`` (soft targets: each galaxy's vote fractions) the NLL is the cross-entropy
    to those fractions, so that probabilities are calibrated as vote fractions rather than
    sharpened towards the most-voted answer.
    """
    from scipy.optimize import minimize_scalar

    target = np.asarray(y if fractions is None else fractions)

    def nll(log_t: float) -> float:
        return cross_entropy(logits / np.exp(log_t), target)

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def _batch_score(logits: np.ndarray, y: np.ndarray, offsets: np.ndarray, metric: str) -> np.ndarray:
    """The metric of argmax(logits + o) for each row o of ``offsets`` (m, k), or for each of
    per-image offsets (m, n, k)."""
    if offsets.ndim == 2:
        offsets = offsets[:, None, :]
    pred = (logits[None] + offsets).argmax(axis=2)
    return confusion_scores(confusion_matrices(y, pred, logits.shape[1]))[metric]


def search_offsets(
    logits: np.ndarray, y: np.ndarray, metric: str, max_offset: float, steps: int = 41, rounds: int = 3
) -> np.ndarray:
    """Per-class offsets by coordinate ascent over a bounded grid, each class's grid scored at once.

    On ties the candidate nearest zero wins, so an offset moves only when it helps on the
    images given. This is the greedy rule: on a small validation set it chases noise.
    """
    k = logits.shape[1]
    grid = np.linspace(-max_offset, max_offset, steps)
    grid = grid[np.argsort(np.abs(grid), kind="stable")]
    offsets = np.zeros(k)
    best = _batch_score(logits, y, offsets[None], metric)[0]
    for _ in range(rounds):
        changed = False
        for c in range(k):
            trials = np.repeat(offsets[None], steps, axis=0)
            trials[:, c] = grid
            scores = _batch_score(logits, y, trials, metric)
            i = int(scores.argmax())  # first maximum: the one nearest zero
            if scores[i] > best + 1e-12:
                best, offsets, changed = scores[i], trials[i], True
        if not changed:
            break
    # Only differences between offsets matter; centre them for readability.
    return offsets - offsets.mean()


def _stratified_resample(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bootstrap resample that keeps every class's count (so a rare class never vanishes)."""
    return np.concatenate([rng.choice(np.flatnonzero(y == c), (y == c).sum()) for c in np.unique(y)])


def _bags(y: np.ndarray, seed: int, n_bags: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [_stratified_resample(y, rng) for _ in range(n_bags)]


def fit_offsets(
    logits: np.ndarray, y: np.ndarray, metric: str, max_offset: float, rule: str = "bagged",
    seed: int = 0, n_bags: int = 20,
) -> list[float]:
    """Per-class offsets by ``rule``: 'greedy' (``search_offsets`` on all of ``logits``) or
    'bagged' (its mean over ``n_bags`` stratified bootstrap resamples, drawn from ``seed``)."""
    if rule == "greedy":
        return search_offsets(logits, y, metric, max_offset).tolist()
    if rule != "bagged":
        raise ValueError(f"unknown offset rule {rule}; choose from {OFFSET_RULES}")
    bags = _bags(y, seed, n_bags)
    return np.mean([search_offsets(logits[i], y[i], metric, max_offset) for i in bags], axis=0).tolist()


def check_offsets(
    logits: np.ndarray, y: np.ndarray, metric: str, max_offset: float, max_accuracy_drop: float,
    seed: int = 0, n_bags: int = 20,
) -> OffsetCheck:
    """Offsets fitted on each bootstrap resample of validation, scored against none on the
    images that resample left out (see the module docstring)."""
    none = np.zeros(logits.shape[1])
    scores = []  # per resample: (metric with, metric without, accuracy with, accuracy without)
    for bag in _bags(y, seed + 1, n_bags):  # other resamples than the fit's
        out = np.setdiff1d(np.arange(len(y)), bag)
        if len(np.unique(y[out])) < 2:
            continue
        fitted = np.stack([search_offsets(logits[bag], y[bag], metric, max_offset), none])
        scores.append([*_batch_score(logits[out], y[out], fitted, metric),
                       *_batch_score(logits[out], y[out], fitted, "accuracy")])
    plain = float(_batch_score(logits, y, none[None], metric)[0])
    if not scores:
        return OffsetCheck(metric, 0.0, 0.0, False, plain)
    with_metric, without_metric, with_accuracy, without_accuracy = np.mean(scores, axis=0)
    metric_gain, accuracy_change = float(with_metric - without_metric), float(with_accuracy - without_accuracy)
    kept = metric_gain > 0 and accuracy_change >= -max_accuracy_drop
    return OffsetCheck(metric, metric_gain, accuracy_change, kept, plain + metric_gain if kept else plain)


def fit_decision_rule(
    logits: np.ndarray, y: np.ndarray, metric: str, temperature: bool = True,
    offsets: bool = True, max_offset: float = 2.0, rule: str = "bagged", seed: int = 0,
    fractions: np.ndarray | None = None, max_accuracy_drop: float | None = None,
) -> DecisionRule:
    """With ``max_accuracy_drop`` the offsets are kept only if the out-of-bag check passes
    (:func:`check_offsets`, recorded as ``rule.check``); None: kept unchecked. ``fractions``:
    vote fractions of soft targets, which the temperature then calibrates to."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    t = fit_temperature(logits, y, fractions) if temperature else 1.0
    b = fit_offsets(logits / t, y, metric, max_offset, rule, seed) if offsets else [0.0] * logits.shape[1]
    check = None
    if offsets and max_accuracy_drop is not None:
        check = check_offsets(logits / t, y, metric, max_offset, max_accuracy_drop, seed)
        if not check.kept:
            b = [0.0] * logits.shape[1]
    return DecisionRule(temperature=t, offsets=b, check=check)


def _best_thresholds(z: np.ndarray, positive: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Per class, the logit threshold in ``grid`` (ordered nearest zero first, which wins ties)
    with the best F1 of the positive label."""
    pred = z[None] > grid[:, None, None]  # (thresholds, n, classes)
    tp = (pred & positive).sum(axis=1)
    wrong = (pred != positive).sum(axis=1)  # false positives + false negatives
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + wrong > 0, 2 * tp / (2 * tp + wrong), 0.0)
    return grid[f1.argmax(axis=0)]


def fit_multilabel_thresholds(
    logits: np.ndarray, labels: np.ndarray, max_logit: float = 4.0, steps: int = 81,
    n_bags: int = 20, seed: int = 0,
) -> list[float]:
    """Per-class probability thresholds for independent sigmoid outputs, tuned for each
    class's F1 on validation ``labels`` (n, classes) of 0/1. Bagged like the offsets: the best
    logit threshold of each bootstrap resample, averaged, so a class whose best threshold
    scatters from resample to resample stays nearer the default 0.5."""
    from scipy.special import expit

    z = np.asarray(logits, dtype=np.float64)
    positive = np.asarray(labels).astype(bool)
    grid = np.linspace(-max_logit, max_logit, steps)
    grid = grid[np.argsort(np.abs(grid), kind="stable")]
    rng = np.random.default_rng(seed)
    bags = [rng.integers(0, len(z), len(z)) for _ in range(n_bags)]
    return expit(np.mean([_best_thresholds(z[i], positive[i], grid) for i in bags], axis=0)).tolist()
