"""The decision rule: temperature scaling, then per-class logit offsets.

probabilities = softmax(logits / T + b). The temperature T is fitted on validation logits by
minimising the negative log-likelihood (it calibrates, and never changes the argmax); the
offsets b shift the class priors and are tuned on validation for the chosen metric. Both are
fitted on validation data only; their gain is measured on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from galaxytune.evaluation.metrics import score


@dataclass
class DecisionRule:
    temperature: float = 1.0
    offsets: list[float] = field(default_factory=list)

    def adjusted_logits(self, logits: np.ndarray) -> np.ndarray:
        offsets = np.asarray(self.offsets) if self.offsets else 0.0
        return logits / self.temperature + offsets

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(self.adjusted_logits(np.asarray(logits, dtype=np.float64)), axis=1)

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "offsets": list(self.offsets)}


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises validation NLL (searched on log T)."""

    def nll(log_t: float) -> float:
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean()

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def fit_offsets(
    logits: np.ndarray, y: np.ndarray, metric: str, max_offset: float, steps: int = 41, rounds: int = 3
) -> list[float]:
    """Per-class offsets by coordinate ascent over a bounded grid.

    On ties the candidate nearest zero wins, so an offset moves only when it helps on
    validation; that and the bound keep the rule from chasing noise in small sets.
    """
    k = logits.shape[1]
    grid = np.linspace(-max_offset, max_offset, steps)
    grid = grid[np.argsort(np.abs(grid), kind="stable")]
    offsets = np.zeros(k)
    best = score(y, (logits + offsets).argmax(1), metric)
    for _ in range(rounds):
        changed = False
        for c in range(k):
            for value in grid:
                trial = offsets.copy()
                trial[c] = value
                s = score(y, (logits + trial).argmax(1), metric)
                if s > best + 1e-12:
                    best, offsets, changed = s, trial, True
        if not changed:
            break
    # Only differences between offsets matter; centre them for readability.
    return (offsets - offsets.mean()).tolist()


def fit_decision_rule(
    logits: np.ndarray, y: np.ndarray, metric: str, temperature: bool = True,
    offsets: bool = True, max_offset: float = 2.0,
) -> DecisionRule:
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    t = fit_temperature(logits, y) if temperature else 1.0
    b = fit_offsets(logits / t, y, metric, max_offset) if offsets else [0.0] * logits.shape[1]
    return DecisionRule(temperature=t, offsets=b)
