"""A CSV catalog (plain or .gz) of labelled images: a path column, a label column and an
optional 'split' column (train/val/test), paths relative to the catalog's folder."""

from __future__ import annotations

from pathlib import Path

from galaxytune.data.csv_table import read_columns, read_header, require
from galaxytune.data.readers.hdf5 import file_of
from galaxytune.data.samples import Sample, is_file, split_name
from galaxytune.errors import DataError

CATALOG_SUFFIXES = (".csv", ".csv.gz")
PATH_SETTING = "data.path_column (--path-column)"
LABEL_SETTING = "data.label_column (--label-column)"


def is_catalog(path: Path) -> bool:
    return path.name.lower().endswith(CATALOG_SUFFIXES)


def _columns(csv_path: Path, wanted: dict[str, str]) -> dict[str, list[str]]:
    """The text of the ``wanted`` columns (column -> the setting naming it) and of 'split' where present."""
    header = read_header(csv_path)
    require(csv_path, header, wanted)
    return read_columns(csv_path, list(wanted) + (["split"] if "split" in header and "split" not in wanted else []))


def catalog_paths(csv_path: Path, path_column: str) -> list[Path]:
    """The image paths a catalog lists (relative to its folder), for prediction."""
    paths = []
    for line, rel in enumerate(_columns(csv_path, {path_column: PATH_SETTING})[path_column], start=2):
        if not rel.strip():
            raise DataError(f"{csv_path} line {line}: empty '{path_column}'.")
        paths.append(csv_path.parent / rel.strip())
    return paths


def catalog_samples(csv_path: Path, path_column: str, label_column: str) -> dict[str, list[Sample]]:
    columns = _columns(csv_path, {path_column: PATH_SETTING, label_column: LABEL_SETTING})
    splits = columns.get("split")
    by_split: dict[str, list[Sample]] = {}
    missing = []
    for row, (rel, label) in enumerate(zip(columns[path_column], columns[label_column])):
        line = row + 2
        label, rel = label.strip(), rel.strip()
        if not label or not rel:
            raise DataError(f"{csv_path} line {line}: empty '{path_column}' or '{label_column}'.")
        path = csv_path.parent / rel
        if not is_file(file_of(path)):  # an HDF5 row (file.h5::17) needs its file
            missing.append(f"line {line}: {path}")
            continue
        # An optional 'split' column (train/val/test) fixes the split in the catalog itself.
        split = split_name(splits[row], f"{csv_path} line {line}") if splits else "train"
        by_split.setdefault(split, []).append(Sample(path, label))
    if missing:
        shown = "\n  ".join(missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(
            f"{csv_path}: {len(missing)} row(s) name an image that does not exist "
            f"(paths are relative to the CSV's folder):\n  {shown}{more}\n"
            "Fix the paths or remove those rows."
        )
    if "train" not in by_split:
        raise DataError(f"{csv_path}: no rows belong to the train split.")
    return by_split
