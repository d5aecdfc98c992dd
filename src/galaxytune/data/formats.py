"""From ``data.path`` and ``data.format`` to labelled samples, per split: which reader reads what.

Every reader (:mod:`galaxytune.data.readers`) ends in :class:`Sample` (path, label). HDF5 rows
get row paths (``file.h5::17``) and FITS cutouts are files, so decoding, caching, leakage
hashing, ``splits.csv`` and prediction treat all of them alike. Vote tables are labelled by
:mod:`galaxytune.data.vote_labels`.
"""

from __future__ import annotations

from pathlib import Path

from galaxytune.config import DataConfig, FitsConfig
from galaxytune.console import ensure_console_logging
from galaxytune.data.csv_table import read_header
from galaxytune.data.readers.catalog import catalog_samples, is_catalog
from galaxytune.data.readers.fits import is_fits, is_other_band
from galaxytune.data.readers.folder import folder_samples
from galaxytune.data.readers.galaxy_zoo import GZ2_TABLES, KAGGLE_TABLE, READERS
from galaxytune.data.readers.hdf5 import HDF5_SUFFIXES, galaxy10_samples
from galaxytune.data.samples import Sample, SplitSamples
from galaxytune.data.vote_labels import vote_samples
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
    if is_catalog(root):
        return table_format(read_header(root))
    raise DataError(f"{root} is a file but not a CSV catalog or an HDF5 file; pass a folder, a CSV or a .h5 file.")


def find_labelled(
    path: str | Path, path_column: str, label_column: str, split_folders: dict[str, str] | None = None
) -> dict[str, list[Sample]]:
    """The labelled samples at ``path`` (folder or CSV catalog), per split found there. ``split_folders``
    (split -> folder name) overrides the usual folder names of an image-folder root."""
    root = Path(path).expanduser()
    if not str(path):
        raise DataError("No data given: pass --data PATH (an image folder or a CSV catalog).")
    if not root.exists():
        raise DataError(f"Data path {root} does not exist.")
    if root.is_file():
        if not is_catalog(root):
            raise DataError(f"{root} is a file but not a CSV catalog (.csv or .csv.gz); pass a folder or a CSV.")
        return catalog_samples(root, path_column, label_column)
    return folder_samples(root, split_folders or {})


def find_samples(cfg: DataConfig) -> SplitSamples:
    """The labelled samples at ``cfg.path``, per split found there."""
    ensure_console_logging()
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
