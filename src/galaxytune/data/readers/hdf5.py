"""HDF5 files: images stored as rows of a dataset, addressed by a path (``file.h5::17`` is row 17),
and the labelled sets stored that way: Galaxy10 DECaLS and Galaxy10 SDSS (astroNN files, classes
in 'ans') and GalaxyMNIST (classes in 'labels'), one sample per row with named classes.

Keeping a row a path lets decoding, caching, leakage hashing, ``splits.csv`` and prediction
treat it like any image file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from galaxytune.data.pixels import to_uint8
from galaxytune.data.samples import Sample
from galaxytune.errors import DataError

SEPARATOR = "::"
HDF5_SUFFIXES = (".h5", ".hdf5", ".he5")
IMAGES = "images"
"""The dataset holding the images, (N, H, W, 3) or (N, H, W) (astroNN's Galaxy10 layout)."""


def row_path(file: Path, row: int) -> Path:
    return file.with_name(f"{file.name}{SEPARATOR}{row}")


def split_row_path(path: Path) -> tuple[Path, int] | None:
    """(file, row) for a row path, None for any other path (``a.png::2`` names no HDF5 row)."""
    name, sep, row = path.name.rpartition(SEPARATOR)
    if not sep or not row.isdigit() or Path(name).suffix.lower() not in HDF5_SUFFIXES:
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
        arr = to_uint8(arr)
    return arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr


# Leung & Bovy, henrysky/Galaxy10 (Galaxy10_DECals.h5, 256x256 images).
DECALS_CLASSES = (
    "Disturbed", "Merging", "Round Smooth", "In-between Round Smooth", "Cigar Shaped Smooth",
    "Barred Spiral", "Tight Spiral", "Loose Spiral", "Edge-on without Bulge", "Edge-on with Bulge",
)
# astroNN docs, galaxy10sdss.rst (Galaxy10.h5, 69x69 images).
SDSS_CLASSES = (
    "Disk, Face-on, No Spiral", "Smooth, Completely round", "Smooth, in-between round", "Smooth, Cigar shaped",
    "Disk, Edge-on, Rounded Bulge", "Disk, Edge-on, Boxy Bulge", "Disk, Edge-on, No Bulge",
    "Disk, Face-on, Tight Spiral", "Disk, Face-on, Medium Spiral", "Disk, Face-on, Loose Spiral",
)
# mwalmsley/galaxy_mnist (64x64 images).
GALAXY_MNIST_CLASSES = ("smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral")
# The releases differ in image size; that tells them apart.
CLASSES_BY_SIDE = {256: DECALS_CLASSES, 69: SDSS_CLASSES, 64: GALAXY_MNIST_CLASSES}


def galaxy10_samples(file: Path) -> list[Sample]:
    """A sample per row of ``file``, labelled by its class name (``class_<k>`` for other image sizes)."""
    with open_file(file) as handle:
        key = "labels" if "ans" not in handle and "labels" in handle else "ans"
        images, answers = dataset(handle, IMAGES, file), dataset(handle, key, file)
        shape = images.shape
        ans = np.asarray(answers[()])
    if len(shape) < 3 or len(ans) != shape[0]:
        raise DataError(f"{file}: 'images' {shape} and '{key}' ({len(ans)},) do not hold one class per image.")
    if not np.issubdtype(ans.dtype, np.integer) or (len(ans) and ans.min() < 0):
        raise DataError(f"{file}: '{key}' must hold class numbers 0, 1, 2 ..., not {ans.dtype} values.")
    names = CLASSES_BY_SIDE.get(shape[1], ())
    if len(ans) and ans.max() >= len(names):  # not one of the known releases
        names = [f"class_{k}" for k in range(ans.max() + 1)]
    return [Sample(row_path(file, i), names[k]) for i, k in enumerate(ans.tolist())]
