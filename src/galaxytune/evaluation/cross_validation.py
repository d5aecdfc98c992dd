"""K-fold cross-validation of the whole recipe: how much do the numbers move with the split?

All labelled images are pooled and cut into K stratified folds. Fold i is the test set of run
i; the rest is split into train and val as usual. Each fold is an ordinary run folder (with
its catalog in ``folds.csv``), run one after the other; a fold marked complete is
done, so an interrupted CV resumes where it stopped.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from galaxytune.config import Config, LabelsConfig
from galaxytune.data.formats import find_samples
from galaxytune.data.sources import SPLITS
from galaxytune.errors import ConfigError, DataError
from galaxytune.evaluation.metrics import METRIC_NAMES as METRICS
from galaxytune.files import write_csv, write_dict_csv, write_text

DONE = "fold_complete"  # written after the fold's run has written everything


def write_fold_catalogs(cfg: Config, out: Path, folds: int) -> list[Path]:
    """One CSV catalog (with a train/val/test ``split`` column) per fold."""
    found = find_samples(cfg.data)
    samples = [s for split in SPLITS for s in found.get(split, [])]
    labels = np.array([s.label for s in samples])
    smallest = min(np.unique(labels, return_counts=True)[1])
    if smallest < folds:
        raise DataError(f"A class has only {smallest} image(s): too few for {folds} folds. Use --folds {smallest}.")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=cfg.data.split_seed)
    catalogs = []
    for i, (rest, test) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        rng = np.random.default_rng([cfg.data.split_seed, i])
        rest = rng.permutation(rest)
        # Stratified val carve: the same fraction of every class.
        val = set()
        for label in np.unique(labels[rest]):
            members = rest[labels[rest] == label]
            val.update(members[: max(1, round(cfg.data.val_fraction * len(members)))].tolist())
        split_of = {int(j): "test" for j in test} | {int(j): "val" if j in val else "train" for j in rest}
        path = out / f"fold_{i}" / "folds.csv"
        rows = ((str(s.path.resolve()), s.label, split_of[j]) for j, s in enumerate(samples))
        write_csv(path, ["filename", "label", "split"], rows)
        catalogs.append(path)
    return catalogs


def fold_config(cfg: Config, catalog: Path) -> Config:
    # The fold catalog holds the labels already made from the data's own format.
    data = dataclasses.replace(
        cfg.data, path=str(catalog), path_column="filename", label_column="label", format="csv", labels=LabelsConfig()
    )
    return dataclasses.replace(cfg, data=data)


def summarise(out: Path, folds: int) -> list[dict]:
    """Mean and standard deviation over folds of each stage's test metrics."""
    per_stage: dict[str, list[dict]] = {}
    for i in range(folds):
        with open(out / f"fold_{i}" / "stage_table.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                per_stage.setdefault(row["stage"], []).append(row)
    summary = []
    for stage, rows in per_stage.items():
        entry: dict = {"stage": stage, "folds": len(rows)}
        for metric in METRICS:
            values = np.array([float(r[f"test_{metric}"]) for r in rows])
            entry[f"test_{metric}_mean"], entry[f"test_{metric}_std"] = values.mean(), values.std(ddof=1)
        summary.append(entry)
    lines = [f"| stage | folds | {' | '.join(f'test {m}' for m in METRICS)} |", "|---|---|" + "---|" * len(METRICS)]
    for e in summary:
        cells = [f"{e[f'test_{m}_mean']:.4f} ± {e[f'test_{m}_std']:.4f}" for m in METRICS]
        lines.append(f"| {e['stage']} | {e['folds']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n\nmean ± standard deviation over folds; each fold's test set is unseen by its run\n"
    write_text(out / "cv_summary.md", text)
    write_dict_csv(out / "cv_summary.csv", summary)
    print(text)
    return summary


def cross_validate(cfg: Config, out_dir: str | Path, folds: int, train_fn) -> list[dict]:
    """Run ``train_fn(config, run_dir, overwrite=True)`` on each fold not yet done, then summarise."""
    if folds < 2:
        raise DataError("Cross-validation needs --folds 2 or more.")
    if cfg.data.labels.soft:
        # The fold catalogs hold one label per galaxy; training them would silently drop the fractions.
        raise ConfigError("galaxytune cv does not carry soft targets (data.labels.soft) into its folds yet; "
                          "cross-validate with data.labels.rules or a label column instead.")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    done = [(out / f"fold_{i}" / DONE).is_file() for i in range(folds)]
    catalogs = (
        [out / f"fold_{i}" / "folds.csv" for i in range(folds)] if any(done) else write_fold_catalogs(cfg, out, folds)
    )
    for i, catalog in enumerate(catalogs):
        if done[i]:
            print(f"fold {i + 1}/{folds}: done earlier, kept")
            continue
        print(f"fold {i + 1}/{folds}")
        # A fold interrupted half-way is run again from the start.
        train_fn(fold_config(cfg, catalog), out / f"fold_{i}", overwrite=True)
        write_text(out / f"fold_{i}" / DONE, "")
    return summarise(out, folds)
