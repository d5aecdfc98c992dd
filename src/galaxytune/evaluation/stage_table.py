"""The stage table: one row per stage, validation and test metrics side by side, with 95%
bootstrap intervals on test, and the paired-bootstrap gain of each stage over the one before."""

from __future__ import annotations

import numpy as np

from galaxytune.evaluation.bootstrap import bootstrap_intervals, paired_bootstrap
from galaxytune.evaluation.metrics import METRIC_NAMES, METRICS, classification_metrics
from galaxytune.files import write_dict_csv, write_text
from galaxytune.run_folder import RunFolder

COLUMNS = METRIC_NAMES
SHORT = {"accuracy": "acc", "balanced_accuracy": "bal_acc", "macro_f1": "macro_f1", "ece": "ece"}
GAIN_METRICS = METRICS


def stage_row(
    name: str, val_probs: np.ndarray, test_probs: np.ndarray, y_val: np.ndarray, y_test: np.ndarray,
    seconds: float, seed: int = 0, fractions: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """``fractions``: the val and test vote fractions, with soft targets: adds their RMSE."""
    row: dict = {"stage": name}
    for split, probs, y in (("val", val_probs, y_val), ("test", test_probs, y_test)):
        for key, value in classification_metrics(y, probs).items():
            row[f"{split}_{key}"] = value
    if fractions is not None:
        for split, probs, f in (("val", val_probs, fractions[0]), ("test", test_probs, fractions[1])):
            row[f"{split}_vote_rmse"] = vote_rmse(probs, f)
    for key, (lo, hi) in bootstrap_intervals(y_test, test_probs, seed=seed).items():
        row[f"test_{key}_ci_low"], row[f"test_{key}_ci_high"] = lo, hi
    row["seconds"] = round(seconds, 1)
    return row


def vote_rmse(probs: np.ndarray, fractions: np.ndarray) -> float:
    """Root-mean-square difference between predicted probabilities and volunteers' vote fractions."""
    return float(np.sqrt(np.mean((np.asarray(probs) - np.asarray(fractions)) ** 2)))


def stage_gains(names: list[str], test_probs: list[np.ndarray], y_test: np.ndarray, seed: int = 0) -> list[dict]:
    """Each stage against the one before it, on the same test images."""
    rows = []
    for i in range(1, len(names)):
        for metric in GAIN_METRICS:
            result = paired_bootstrap(y_test, test_probs[i - 1], test_probs[i], metric, seed=seed)
            rows.append({"stage": names[i], "versus": names[i - 1], "metric": metric, **result})
    return rows


def _cell(row: dict, split: str, metric: str) -> str:
    text = f"{row[f'{split}_{metric}']:.4f}"
    if f"{split}_{metric}_ci_low" in row:
        text += f" [{row[f'{split}_{metric}_ci_low']:.3f}, {row[f'{split}_{metric}_ci_high']:.3f}]"
    return text


def format_table(rows: list[dict], gains: list[dict] = ()) -> str:
    """A Markdown table (readable in a terminal too), then the stage gains."""
    head = ["stage"] + [f"{split} {SHORT[c]}" for split in ("val", "test") for c in COLUMNS] + ["seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["stage"]] + [_cell(row, split, c) for split in ("val", "test") for c in COLUMNS]
        lines.append("| " + " | ".join(cells + [f"{row['seconds']:.1f}"]) + " |")
    n_val, n_test = rows[0]["val_n"], rows[0]["test_n"]
    lines.append(
        f"\nval n={n_val} (chooses checkpoints and the decision rule), test n={n_test} (reported only); "
        "[95% bootstrap interval]"
    )
    lines += [row["rule"] for row in rows if "rule" in row]
    if "test_vote_rmse" in rows[0]:
        lines.append("Vote-fraction RMSE (val / test): " + ", ".join(
            f"{r['stage']} {r['val_vote_rmse']:.4f} / {r['test_vote_rmse']:.4f}" for r in rows))
    if gains:
        lines.append("\nGain of each stage over the one before, on test (paired bootstrap):")
        for g in gains:
            lines.append(
                f"- {g['stage']} vs {g['versus']}, {g['metric']}: {g['delta']:+.4f} "
                f"[{g['ci_low']:+.3f}, {g['ci_high']:+.3f}], P(no gain) = {g['p_not_better']:.3f}"
            )
    return "\n".join(lines)


def write_table(rows: list[dict], gains: list[dict], folder: RunFolder) -> None:
    write_dict_csv(folder.stage_table, rows)
    if gains:
        write_dict_csv(folder.stage_gains, gains)
    write_text(folder.stage_table_md, format_table(rows, gains) + "\n")
