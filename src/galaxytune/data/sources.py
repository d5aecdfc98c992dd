"""Find labelled images: image folders (``train/<class>/``...) or a CSV catalog.

Both give the same thing: for each split present on disk, a list of :class:`Sample`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from galaxytune.data.fits import FITS_SUFFIXES
from galaxytune.data.hdf5 import HDF5_SUFFIXES, file_of, row_paths
from galaxytune.data.tables import separator_hint
from galaxytune.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", *FITS_SUFFIXES)
SPLITS = ("train", "val", "test")
# Folder names some public sets use for the validation split.
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    fractions: tuple[float, ...] | None = None
    """Vote fractions over the classes (in sorted class order) when training on soft targets."""
    counts: tuple[float, ...] | None = None
    """Votes for every answer of every question (galaxytune.data.questions), where the table has them."""


class SplitSamples(dict):
    """Split name -> its samples, and the Galaxy Zoo questions whose answer counts the samples
    carry (empty for data without vote counts)."""

    def __init__(self, by_split: dict[str, list[Sample]], questions: list | None = None):
        super().__init__(by_split)
        self.questions = list(questions or [])


def is_file(path: Path) -> bool:
    """``path.is_file()``, but False where the OS refuses the name (too long, ...) instead of raising."""
    try:
        return path.is_file()
    except OSError:
        return False


def is_image(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_EXTENSIONS) and not path.name.startswith(".")


def _class_folder(folder: Path) -> list[Sample]:
    samples = []
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(
            f"{folder} holds no class folders. Expected {folder}/<class>/<image>.jpg "
            "(or train/, val/ and test/ folders above the class folders)."
        )
    for class_dir in classes:
        images = sorted(p for p in class_dir.rglob("*") if p.is_file() and is_image(p))
        if not images:
            raise DataError(
                f"Class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}). "
                "Add images or remove the folder."
            )
        samples += [Sample(p, class_dir.name) for p in images]
    return samples


def _from_folders(root: Path, split_folders: dict[str, str]) -> dict[str, list[Sample]]:
    found: dict[str, list[Sample]] = {}
    named = set(split_folders.values())
    for split, aliases in SPLIT_ALIASES.items():
        names = [split_folders[split]] if split in split_folders else [n for n in aliases if n not in named]
        if split in split_folders and not (root / split_folders[split]).is_dir():
            raise DataError(f"data.split_folders names {root / split_folders[split]} for the {split} split, "
                            "but there is no such folder.")
        for name in names:
            if (root / name).is_dir():
                found[split] = _class_folder(root / name)
                break
    if "train" in found:
        return found
    if found:
        raise DataError(f"{root} has {', '.join(found)} but no train/ folder of class folders.")
    # No split folders: the class folders sit directly under the root.
    return {"train": _class_folder(root)}


def read_catalog(csv_path: Path, path_column: str, label_column: str | None) -> list[dict]:
    """Rows of a CSV catalog, checking the named columns exist."""
    # utf-8-sig: spreadsheet programs often start a CSV with a byte-order mark.
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path} is not a readable UTF-8 CSV file ({exc}). Save it as UTF-8 CSV.") from None
    for column in (c for c in (path_column, label_column) if c is not None):
        if column not in columns:
            fix = separator_hint(columns) or " Choose with --path-column / --label-column."
            raise DataError(f"{csv_path} has no column '{column}'. Its columns start: {', '.join(columns[:12])}.{fix}")
    return rows


def catalog_paths(csv_path: Path, path_column: str) -> list[Path]:
    """The image paths a catalog lists (relative to its folder), for prediction."""
    paths = []
    for line, row in enumerate(read_catalog(csv_path, path_column, None), start=2):
        rel = (row[path_column] or "").strip()
        if not rel:
            raise DataError(f"{csv_path} line {line}: empty '{path_column}'.")
        paths.append(csv_path.parent / rel)
    return paths


def _from_csv(csv_path: Path, path_column: str, label_column: str) -> dict[str, list[Sample]]:
    rows = read_catalog(csv_path, path_column, label_column)
    if not rows:
        raise DataError(f"{csv_path} has a header but no rows.")
    base = csv_path.parent
    by_split: dict[str, list[Sample]] = {}
    missing = []
    for line, row in enumerate(rows, start=2):
        label = (row[label_column] or "").strip()
        rel = (row[path_column] or "").strip()
        if not label or not rel:
            raise DataError(f"{csv_path} line {line}: empty '{path_column}' or '{label_column}'.")
        path = base / rel
        if not is_file(file_of(path)):  # an HDF5 row (file.h5::17) needs its file
            missing.append(f"line {line}: {path}")
            continue
        # An optional 'split' column (train/val/test) fixes the split in the catalog itself.
        split = (row.get("split") or "train").strip().lower()
        split = next((s for s, names in SPLIT_ALIASES.items() if split in names), None)
        if split is None:
            raise DataError(f"{csv_path} line {line}: split '{row['split']}' is not train/val/test.")
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


def find_labelled(
    path: str | Path, path_column: str, label_column: str, split_folders: dict[str, str] | None = None
) -> dict[str, list[Sample]]:
    """The labelled samples at ``path`` (folder or CSV), per split found there. ``split_folders``
    (split -> folder name) overrides the usual folder names of an image-folder root."""
    root = Path(path).expanduser()
    if not str(path):
        raise DataError("No data given: pass --data PATH (an image folder or a CSV catalog).")
    if not root.exists():
        raise DataError(f"Data path {root} does not exist.")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"{root} is a file but not a .csv catalog; pass a folder or a CSV.")
        return _from_csv(root, path_column, label_column)
    return _from_folders(root, split_folders or {})


def find_images(paths: list[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively) under the folders given; an HDF5 file
    stands for all its rows, a row path (``file.h5::17``) for one."""
    found: list[Path] = []
    for item in paths:
        path = Path(item).expanduser()
        try:
            folder = path.is_dir()
        except OSError:  # a name the OS refuses (too long, ...): reported as not existing
            folder = False
        if folder:
            found += sorted(p for p in path.rglob("*") if p.is_file() and is_image(p))
        elif is_file(path) and path.name.lower().endswith(HDF5_SUFFIXES):
            found += row_paths(path)
        elif is_file(file_of(path)):
            found.append(path)
        else:
            raise DataError(f"{path} does not exist.")
    if not found:
        raise DataError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(map(str, paths))}.")
    return found
