"""K-fold cross-validation of the whole recipe: how much do the numbers move with the split?

All labelled images are pooled and cut into K stratified folds. Fold i is the test set of run
i; the rest is split into train and val as usual. Each fold is an ordinary run folder (with
its catalog in ``folds.csv``), run one after the other; a fold marked complete is
done, and an interrupted fold resumes from its last epoch, so an interrupted CV goes on where it
stopped. ``cv.json`` records the fold count, the config and a fingerprint of the data: a rerun
with other settings is refused rather than summarised with the old folds.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from galaxytune.cache import key_of
from galaxytune.config import Config, LabelsConfig
from galaxytune.console import ensure_console_logging
from galaxytune.data.formats import find_samples
from galaxytune.data.samples import SPLITS, Sample
from galaxytune.errors import ConfigError, DataError
from galaxytune.evaluation.metrics import METRIC_NAMES as METRICS
from galaxytune.files import write_csv, write_dict_csv, write_json, write_text
from galaxytune.run_folder import RunFolder

DONE = "fold_complete"  # written after the fold's run has written everything
CV_RECORD = "cv.json"
log = logging.getLogger(__name__)


def pooled_samples(cfg: Config) -> list[Sample]:
    found = find_samples(cfg.data)
    return [s for split in SPLITS for s in found.get(split, [])]


def fingerprint(cfg: Config, folds: int, samples: list[Sample]) -> dict:
    """What makes a cross-validation: its folds, settings and data (each image's path, size and label)."""
    data = [(str(s.path), s.label, s.path.stat().st_size if s.path.is_file() else None) for s in samples]
    settings = cfg.to_dict()
    settings["data"].pop("path")  # the same data moved elsewhere is still the same data
    return {"folds": folds, "config": key_of(settings), "data": key_of(sorted(data, key=str)),
            "images": len(samples)}


def write_fold_catalogs(cfg: Config, out: Path, folds: int, samples: list[Sample] | None = None) -> list[Path]:
    """One CSV catalog (with a train/val/test ``split`` column) per fold, of ``samples`` (default:
    every labelled image of ``cfg.data``)."""
    samples = pooled_samples(cfg) if samples is None else samples
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
        with open(RunFolder(out / f"fold_{i}").stage_table, newline="") as handle:
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
    log.info(text)
    return summary


def _check_or_start(out: Path, record: dict, overwrite: bool) -> None:
    """Keep the folds in ``out`` only if they were made with ``record``'s settings and data."""
    path = out / CV_RECORD
    old = json.loads(path.read_text()) if path.is_file() else None
    stale = [p for p in out.glob("fold_*") if p.is_dir()]
    if old != record and (old is not None or stale):
        if not overwrite:
            what = [k for k in ("folds", "config", "data") if old is None or old.get(k) != record[k]]
            raise ConfigError(f"{out} holds a cross-validation with other {', '.join(what) or 'settings'}"
                              f"{'' if old is None else ' (' + str(old['folds']) + ' folds)'}. Choose another --out, "
                              "or pass --overwrite to replace it.")
        for folder in stale:
            shutil.rmtree(folder)
        for name in ("cv_summary.md", "cv_summary.csv"):
            (out / name).unlink(missing_ok=True)
    write_json(path, record)


def cross_validate(cfg: Config, out_dir: str | Path, folds: int, train_fn, overwrite: bool = False) -> list[dict]:
    """Run ``train_fn(config, run_dir, overwrite=..., resume=...)`` on each fold not yet done, then
    summarise."""
    if folds < 2:
        raise DataError("Cross-validation needs --folds 2 or more.")
    if cfg.data.labels.soft or cfg.data.labels.vote_redraws:
        # The fold catalogs hold one label per galaxy; training them would silently drop the fractions.
        raise ConfigError("galaxytune cv does not carry soft targets (data.labels.soft, data.labels.vote_redraws) "
                          "into its folds yet; cross-validate with data.labels.rules or a label column instead.")
    ensure_console_logging()
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    samples = pooled_samples(cfg)
    _check_or_start(out, fingerprint(cfg, folds, samples), overwrite)
    done = [(out / f"fold_{i}" / DONE).is_file() for i in range(folds)]
    catalogs = (
        [out / f"fold_{i}" / "folds.csv" for i in range(folds)] if any(done)
        else write_fold_catalogs(cfg, out, folds, samples)
    )
    for i, catalog in enumerate(catalogs):
        if done[i]:
            log.info(f"fold {i + 1}/{folds}: done earlier, kept")
            continue
        log.info(f"fold {i + 1}/{folds}")
        folder = RunFolder(out / f"fold_{i}")
        interrupted = folder.config.is_file() and folder.read_state().get("status") in ("running", "interrupted")
        train_fn(fold_config(cfg, catalog), folder.path, overwrite=not interrupted, resume=interrupted)
        write_text(folder.path / DONE, "")
    return summarise(out, folds)
