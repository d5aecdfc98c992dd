"""The stage table: one row per stage, validation and test metrics side by side."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from galaxytune.files import write_text

COLUMNS = ("accuracy", "balanced_accuracy", "macro_f1", "ece")
SHORT = {"accuracy": "acc", "balanced_accuracy": "bal_acc", "macro_f1": "macro_f1", "ece": "ece"}


def format_table(rows: list[dict]) -> str:
    """A Markdown table (readable in a terminal too)."""
    head = ["stage"] + [f"{split} {SHORT[c]}" for split in ("val", "test") for c in COLUMNS] + ["seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["stage"]] + [f"{row[f'{split}_{c}']:.4f}" for split in ("val", "test") for c in COLUMNS]
        lines.append("| " + " | ".join(cells + [f"{row['seconds']:.1f}"]) + " |")
    n_val, n_test = rows[0]["val_n"], rows[0]["test_n"]
    note = f"\nval n={n_val} (chooses checkpoints and the decision rule), test n={n_test} (reported only)"
    return "\n".join(lines) + note


def write_table(rows: list[dict], run_dir: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(run_dir / "stage_table.csv", buffer.getvalue())
    write_text(run_dir / "stage_table.md", format_table(rows) + "\n")
