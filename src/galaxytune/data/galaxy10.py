"""Galaxy10 DECaLS and Galaxy10 SDSS (astroNN HDF5 files, classes in 'ans') and GalaxyMNIST
(classes in 'labels'): one sample per row, named classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from galaxytune.data.hdf5 import IMAGES, dataset, open_file, row_path
from galaxytune.data.sources import Sample
from galaxytune.errors import DataError

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
