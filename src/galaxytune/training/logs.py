"""Merge Lightning's per-stage CSV logs into one per-epoch ``metrics.csv``."""

from __future__ import annotations

import csv

from galaxytune.files import write_csv
from galaxytune.run_folder import RunFolder

FIELDS = ("stage", "epoch", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1", "lr")


def merge_epoch_logs(folder: RunFolder, stages: tuple[str, ...] = ("transfer", "finetune")) -> list[dict]:
    """One row per stage and epoch; Lightning writes train and val values on separate rows. An
    epoch redone after a resume takes its values from the later log."""
    rows = []
    for stage in stages:
        by_epoch: dict[int, dict] = {}
        for path in (p for p in folder.epoch_logs(stage) if p.is_file()):
            with open(path, newline="") as handle:
                for raw in csv.DictReader(handle):
                    if not raw.get("epoch"):
                        continue
                    row = by_epoch.setdefault(int(raw["epoch"]), {"stage": stage, "epoch": int(raw["epoch"])})
                    row.update({k: v for k, v in raw.items() if k in FIELDS[2:] and v != ""})
        rows += [by_epoch[e] for e in sorted(by_epoch)]
    write_csv(folder.epoch_metrics, list(FIELDS), ([row.get(k, "") for k in FIELDS] for row in rows))
    return rows
