"""Images stored as rows of an HDF5 dataset, addressed by a path: ``file.h5::17`` is row 17.

Keeping a row a path lets decoding, caching, leakage hashing, ``splits.csv`` and prediction
treat it like any image file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from galaxytune.errors import DataError

SEPARATOR = "::"
HDF5_SUFFIXES = (".h5", ".hdf5", ".he5")
IMAGES = "images"
"""The dataset holding the images, (N, H, W, 3) or (N, H, W) (astroNN's Galaxy10 layout)."""


def row_path(file: Path, row: int) -> Path:
    return file.with_name(f"{file.name}{SEPARATOR}{row}")


def split_row_path(path: Path) -> tuple[Path, int] | None:
    """(file, row) for a row path, None for any other path."""
    name, sep, row = path.name.rpartition(SEPARATOR)
    if not sep or not row.isdigit():
        return None
    return path.with_name(name), int(row)


def file_of(path: Path) -> Path:
    """The file on disk that ``path`` reads from."""
    ref = split_row_path(path)
    return ref[0] if ref else path


def open_file(file: Path):
    import h5py

    try:
        return h5py.File(file, "r")
    except OSError as exc:
        raise DataError(f"{file} is not a readable HDF5 file ({exc}).") from None


def dataset(handle, name: str, file: Path):
    if name not in handle:
        raise DataError(f"{file} has no dataset '{name}' (it has: {', '.join(handle.keys())}). Expected Galaxy10's "
                        "layout: 'images' (N, H, W, 3) uint8 and 'ans' (N,) class numbers.")
    return handle[name]


def row_paths(file: Path) -> list[Path]:
    """A path for every row of the images dataset of ``file``."""
    with open_file(file) as handle:
        return [row_path(file, i) for i in range(len(dataset(handle, IMAGES, file)))]


def read_row(path: Path) -> np.ndarray:
    """Row ``i`` of the images dataset as (H, W, 3) or (H, W) uint8."""
    file, row = split_row_path(path)
    with open_file(file) as handle:
        images = dataset(handle, IMAGES, file)
        if not row < len(images):
            raise DataError(f"{path}: {file} holds only {len(images)} images.")
        try:
            arr = np.asarray(images[row])
        except OSError as exc:  # a damaged chunk
            raise DataError(f"{path}: the image could not be read ({exc}).") from None
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3)):
        raise DataError(f"{path}: image of shape {arr.shape}; expected (H, W, 3) or (H, W).")
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / (hi - lo) * 255).astype(np.uint8) if hi > lo else np.zeros(arr.shape, np.uint8)
    return arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr
