"""From ``data.path`` and ``data.format`` to labelled samples, per split.

Every format ends as :class:`Sample` (path, label). HDF5 rows get row paths (``file.h5::17``)
and FITS cutouts are files, so decoding, caching, leakage hashing, ``splits.csv`` and
prediction treat all of them alike.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from galaxytune.config import DataConfig, FitsConfig
from galaxytune.data.fits import is_fits, is_other_band
from galaxytune.data.galaxy10 import galaxy10_samples
from galaxytune.data.galaxy_zoo import GZ2_TABLES, KAGGLE_TABLE, READERS, Catalog
from galaxytune.data.hdf5 import HDF5_SUFFIXES
from galaxytune.data.questions import count_columns
from galaxytune.data.sources import SPLIT_ALIASES, Sample, SplitSamples, find_labelled, is_file
from galaxytune.data.tables import numbers, read_header
from galaxytune.data.votes import (
    Labels,
    by_column,
    by_fractions,
    by_rules,
    by_threshold,
    parse_rules,
    rule_columns,
    vote_columns,
)
from galaxytune.errors import ConfigError, DataError

VOTELESS_FORMATS = ("folder", "galaxy10", "fits")
"""Formats whose labels come with the images, never from vote columns."""


def table_format(header: list[str]) -> str:
    if "GalaxyID" in header and "Class1.1" in header:
        return "kaggle_gz"
    if any(c.startswith("t01_smooth_or_features_") for c in header):
        return "gz2"
    if any(c.startswith("smooth-or-featured_") for c in header):
        return "gz_decals"
    return "csv"


def detect_format(root: Path) -> str:
    """The format of an existing data path, from its files or its table's columns."""
    if root.is_dir():
        if (root / KAGGLE_TABLE).is_file():
            return "kaggle_gz"
        if any((root / name).is_file() for name in GZ2_TABLES):
            return "gz2"
        if any(root.glob("gz_decals_volunteers_*.csv")):
            return "gz_decals"
        return "folder"
    name = root.name.lower()
    if name.endswith(HDF5_SUFFIXES):
        return "galaxy10"
    if name.endswith((".csv", ".csv.gz")):
        return table_format(read_header(root))
    raise DataError(f"{root} is a file but not a CSV catalog or an HDF5 file; pass a folder, a CSV or a .h5 file.")


def find_samples(cfg: DataConfig) -> SplitSamples:
    """The labelled samples at ``cfg.path``, per split found there."""
    if not cfg.path:
        raise DataError("No data given: pass --data PATH (an image folder, a CSV catalog or an HDF5 file).")
    root = Path(cfg.path).expanduser()
    if not root.exists():
        raise DataError(f"Data path {root} does not exist.")
    fmt = detect_format(root) if cfg.format == "auto" else cfg.format
    from_votes = bool(cfg.labels.rules or cfg.labels.binary.column or cfg.labels.soft)
    if from_votes and fmt in VOTELESS_FORMATS:
        raise ConfigError(f"data.labels declares labels from votes, but {root} is read as '{fmt}', which has no "
                          "vote columns. Point data.path at a vote table, or remove data.labels.")
    if fmt == "galaxy10":
        return SplitSamples({"train": galaxy10_samples(root)})
    if fmt in ("folder", "fits") or (fmt == "csv" and not from_votes):
        found = find_labelled(root, cfg.path_column, cfg.label_column, cfg.split_folders)
        return SplitSamples(_image_files(found, root, fmt == "fits", cfg.fits))
    return vote_samples(READERS[fmt](root, cfg), cfg)


def _image_files(found: dict[str, list[Sample]], root: Path, fits_only: bool, fits: FitsConfig):
    """Keep FITS files only where asked, and in folders only the first band's file of each galaxy."""
    first_band = fits.band_files[0] if fits.band_files and root.is_dir() else ""

    def wanted(path: Path) -> bool:
        if is_fits(path):
            return not (first_band and is_other_band(path, fits))
        return not fits_only

    kept = {split: [s for s in samples if wanted(s.path)] for split, samples in found.items()}
    if not kept.get("train"):
        raise DataError(f"{root} holds no {'FITS files' if fits_only else 'images'}"
                        f"{f' whose name contains {first_band!r}' if first_band else ''} in its train split.")
    return {split: samples for split, samples in kept.items() if samples}


def _floats(catalog: Catalog, column: str) -> np.ndarray:
    values = catalog.columns[column]
    return values if isinstance(values, np.ndarray) else numbers(catalog.source, column, values)


def _vote_sum(catalog: Catalog, expression: str) -> np.ndarray:
    return np.sum([_floats(catalog, c) for c in vote_columns(expression)], axis=0)


def _labels(catalog: Catalog, cfg: DataConfig) -> Labels:
    labels = cfg.labels
    votes = _vote_sum(catalog, catalog.votes) if labels.min_votes > 0 else None
    if labels.rules:
        values = {c: _floats(catalog, c) for c in rule_columns(parse_rules(labels.rules))}
        return by_rules(labels, values, votes, catalog.votes)
    if labels.soft:
        return by_fractions(labels, {c: _floats(catalog, c) for c in labels.soft.values()}, votes, catalog.votes)
    if labels.binary.column:
        binary = labels.binary
        question = _vote_sum(catalog, binary.votes) if binary.min_votes > 0 else None
        return by_threshold(labels, {binary.column: _floats(catalog, binary.column)}, votes, catalog.votes, question)
    return by_column(labels, catalog.columns[cfg.label_column], cfg.label_column, votes, catalog.votes)


def _split(catalog: Catalog, row: int) -> str:
    if "split" not in catalog.columns:
        return "train"
    text = catalog.columns["split"][row].strip().lower() or "train"
    split = next((s for s, names in SPLIT_ALIASES.items() if text in names), None)
    if split is None:
        raise DataError(f"{catalog.source} line {row + 2}: split '{text}' is not train/val/test.")
    return split


def _answer_counts(catalog: Catalog) -> np.ndarray | None:
    """(galaxies, answers) vote counts of ``catalog.questions``; an empty cell (a question never
    reached) counts zero votes."""
    columns = count_columns(catalog.questions)
    if not columns:
        return None
    return np.nan_to_num(np.stack([_floats(catalog, c) for c in columns], axis=1))


def vote_samples(catalog: Catalog, cfg: DataConfig) -> SplitSamples:
    """Label every galaxy of ``catalog``, drop (and count) those without a label or an image."""
    labels = _labels(catalog, cfg)
    counts = _answer_counts(catalog)
    dropped, no_image, by_split = dict(labels.dropped), [], {}
    for row, (label, path) in enumerate(zip(labels.labels, catalog.paths)):
        if label is None:
            continue
        if path is None or not is_file(path):
            no_image.append(path)
            continue
        fractions = None if labels.fractions is None else tuple(labels.fractions[row].tolist())
        answers = None if counts is None else tuple(counts[row].tolist())
        by_split.setdefault(_split(catalog, row), []).append(Sample(path, label, fractions, answers))
    if no_image:
        example = next((p for p in no_image if p is not None), None)
        dropped["without an image file" + (f" (e.g. {example})" if example else "")] = len(no_image)
    kept = [s for samples in by_split.values() for s in samples]
    counts = ", ".join(f"{label} {n}" for label, n in sorted(Counter(s.label for s in kept).items()))
    why = "; dropped " + ", ".join(f"{n} {reason}" for reason, n in dropped.items()) if dropped else ""
    print(f"{catalog.source}: {len(kept)} of {len(labels.labels)} galaxies labelled ({counts}){why}.")
    if not kept:
        raise DataError(f"{catalog.source}: no galaxy is left to train on{why}. Loosen data.labels or check the "
                        "images are where the table says.")
    if "train" not in by_split:
        raise DataError(f"{catalog.source}: no rows belong to the train split.")
    return SplitSamples(by_split, catalog.questions)
