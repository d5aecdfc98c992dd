"""The report's figures, each written as a PNG file.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot: ``savefig`` then renders
with Agg whatever the session's backend, no figure is registered globally (nothing to close or
leak), and importing this module never switches the backend of a user's notebook.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from galaxytune.evaluation.metrics import expected_calibration_error

DPI = 110


def _literal_text(draw):
    """Class names and titles drawn as written: a '$' in a class name (a model from someone
    else is untrusted input) must neither be parsed as TeX math nor crash the report."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)

    return wrapper


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # bbox_inches="tight" keeps long, rotated class names from being clipped.
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


@_literal_text
def training_curves(rows: list[dict], stage: str, path: Path) -> Path:
    """Loss (train and val), validation metrics and learning rate per epoch of one stage."""

    def column(key: str) -> np.ndarray:
        return np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])

    epoch = column("epoch")
    fig = Figure(figsize=(13, 3.4))
    ax_loss, ax_metric, ax_lr = fig.subplots(1, 3)
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        ax_loss.plot(epoch, column(key), marker=".", label=label)
    for key, label in (("val_accuracy", "accuracy"), ("val_balanced_accuracy", "balanced acc."),
                       ("val_macro_f1", "macro-F1")):
        ax_metric.plot(epoch, column(key), marker=".", label=label)
    ax_lr.plot(epoch, column("lr"), marker=".", color="tab:gray")
    for ax, title in ((ax_loss, "loss"), (ax_metric, "validation metrics"), (ax_lr, "learning rate")):
        ax.set_title(f"{stage}: {title}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_loss.legend()
    ax_metric.legend()
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    return _save(fig, path)


def lr_sweep(rates: list[float], losses: list[float], suggestion: float, path: Path) -> Path:
    """The learning-rate range test: smoothed training loss against the swept rate, and the rate
    it suggested (galaxytune.training.lr_finder)."""
    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.subplots()
    ax.plot(rates, losses, color="tab:blue")
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (every layer group)")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("finetune: learning-rate sweep")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


@_literal_text
def confusion_matrices(cm: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    """Counts beside row-normalised rates (rows: true class), so rare classes stay visible."""
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = 2.2 + 0.75 * len(classes)
    fig = Figure(figsize=(2 * side + 2.5, side), layout="constrained")  # constrained: colorbars stay clear
    for ax, values, kind, fmt in zip(fig.subplots(1, 2), (cm, rates), ("counts", "row-normalised"), ("d", ".2f")):
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if kind != "counts" else None)
        fig.colorbar(image, ax=ax, shrink=0.8)
        threshold = values.max() / 2 if values.size else 0
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=8,
                    color="white" if v > threshold else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=40, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} ({kind})")
    return _save(fig, path)


@_literal_text
def per_class_bars(precision: np.ndarray, recall: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    x = np.arange(len(classes))
    fig = Figure(figsize=(max(6.0, 1.1 * len(classes) + 2), 3.8))
    ax = fig.subplots()
    ax.bar(x - 0.2, precision, 0.4, label="precision")
    ax.bar(x + 0.2, recall, 0.4, label="recall")
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


@_literal_text
def reliability_diagrams(y: np.ndarray, probs_by_name: dict[str, np.ndarray], path: Path, bins: int = 15) -> Path:
    """Top-label accuracy against confidence, one panel per set of probabilities.

    The bins match ``expected_calibration_error`` so each panel's ECE is the weighted gap drawn.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig = Figure(figsize=(4.2 * len(probs_by_name), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(probs_by_name), sharey=True))
    for ax, (name, probs) in zip(axes, probs_by_name.items()):
        confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == y
        which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
        counts = np.bincount(which, minlength=bins)
        accuracy = np.bincount(which, weights=correct, minlength=bins) / np.maximum(counts, 1)
        shown = counts > 0
        ax.bar(edges[:-1][shown], accuracy[shown], width=1 / bins, align="edge", edgecolor="black",
               alpha=0.75, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="tab:red", label="perfect calibration")
        ax.set_title(f"{name}\nECE = {expected_calibration_error(y, probs, bins):.3f}")
        ax.set_xlabel("confidence (max probability)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left")
    return _save(fig, path)


@_literal_text
def roc_pr_curves(
    y: np.ndarray, probs: np.ndarray, classes: list[str], title: str, path: Path
) -> tuple[list[float], list[float]]:
    """One-vs-rest ROC and precision-recall curves; returns the per-class ROC AUCs and APs.

    A class absent from ``y`` has no positives, so its curves are undefined: NaN, not drawn.
    """
    fig = Figure(figsize=(12, 4.8))
    ax_roc, ax_pr = fig.subplots(1, 2)
    aucs, aps = [], []
    for c, name in enumerate(classes):
        truth = y == c
        if truth.all() or not truth.any():
            aucs.append(math.nan)
            aps.append(math.nan)
            continue
        aucs.append(float(roc_auc_score(truth, probs[:, c])))
        aps.append(float(average_precision_score(truth, probs[:, c])))
        fpr, tpr, _ = roc_curve(truth, probs[:, c])
        precision, recall, _ = precision_recall_curve(truth, probs[:, c])
        ax_roc.plot(fpr, tpr, label=f"{name} (AUC {aucs[-1]:.3f})")
        ax_pr.step(recall, precision, where="post", label=f"{name} (AP {aps[-1]:.3f})")
    ax_roc.plot([0, 1], [0, 1], ":", color="gray")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC (one-vs-rest)")
    ax_pr.set(xlabel="recall", ylabel="precision", title=f"{title}: precision-recall (one-vs-rest)",
              xlim=(0, 1), ylim=(0, 1.02))
    for ax in (ax_roc, ax_pr):
        ax.grid(alpha=0.3)
        # Below the axes: inside, the legend would hide the curves it names.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2)
    _save(fig, path)
    return aucs, aps
