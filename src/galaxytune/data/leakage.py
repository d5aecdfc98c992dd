"""Leakage guard: no image of val or test may also be in train, nor a test image in val.

Two checks: identical files (SHA-256 of the bytes) and near-duplicates (the same cutout
re-encoded, resized or re-downloaded). A near-duplicate is found by a perceptual hash and
confirmed by its pixels; images with too little structure for either to tell two of them apart
(a point source on blank sky) are compared as files only, and counted. Catalogs built from
several sources often hold the same galaxy twice; a test image that is also a training image
inflates every number in the stage table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.fft import dctn

from galaxytune.files import write_csv

HASH_SIDE = 16
HASH_BYTES = HASH_SIDE * HASH_SIDE // 8
# Bits set in each byte value, to count differing bits of packed hashes.
POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)

THUMBNAIL_SIDE = 32
"""Grey thumbnails of this side confirm hash matches and tell sparse images (1 KB an image)."""
MIN_STRUCTURE = 8.0
"""Fewest thumbnail pixels that must carry an image's contrast (see :func:`too_sparse`)."""
MIN_CONTRAST = 1.0
"""Lowest RMS contrast of a thumbnail, in grey levels of 255: below it the hash encodes rounding noise."""
MAX_PIXEL_DIFFERENCE = 0.25
"""Largest :func:`pixel_difference` of a confirmed near-duplicate. Resized JPEG-60 and noised
JPEG-85 copies of 400 GZ2 cutouts stayed within 0.11; hash-matched distinct FIRST sources
that pass :func:`too_sparse` were 0.34 apart or more."""


def _grey(pixels: torch.Tensor, side: int) -> np.ndarray:
    """(n, side, side) float grey images of a (n, 3, S, S) uint8 batch, by area averaging."""
    grey = pixels.float().mean(dim=1, keepdim=True)
    return torch.nn.functional.interpolate(grey, size=(side, side), mode="area")[:, 0].numpy()


def perceptual_hash(pixels: torch.Tensor) -> np.ndarray:
    """256-bit DCT hashes of a (n, 3, S, S) uint8 batch, packed as (n, 32) uint8.

    Grey 64x64 thumbnail, 2-D DCT, the 16x16 lowest frequencies against their median: robust to
    compression, resizing and small photometric changes, not to rotation. The usual 64-bit
    hash is too coarse for galaxies (a dark sky around a central blob): on SDSS cutouts,
    distinct galaxies came within 2 bits of each other; with 256 bits the closest distinct pair
    of 6,741 cutouts is 36 bits apart, while resized JPEG-60 copies stayed within 32 (mean 17).
    """
    small = _grey(pixels, 64)
    low = dctn(small, axes=(1, 2), norm="ortho")[:, :HASH_SIDE, :HASH_SIDE].reshape(len(small), -1)
    bits = low > np.median(low[:, 1:], axis=1, keepdims=True)  # the DC term would skew the median
    return np.packbits(bits, axis=1)


def grey_thumbnails(pixels: torch.Tensor) -> np.ndarray:
    """(n, 32, 32) uint8 grey thumbnails of a (n, 3, S, S) uint8 batch."""
    return np.rint(_grey(pixels, THUMBNAIL_SIDE)).astype(np.uint8)


def hash_distance(hashes: np.ndarray, one: np.ndarray) -> np.ndarray:
    """Differing bits between each row of ``hashes`` and the hash ``one``."""
    return POPCOUNT[np.bitwise_xor(hashes, one)].sum(axis=1)


def _deviations(thumbnails: np.ndarray) -> np.ndarray:
    """Each thumbnail's pixels less its median, the sky level, as (n, pixels) floats."""
    flat = thumbnails.reshape(len(thumbnails), -1).astype(np.float64)
    return flat - np.median(flat, axis=1, keepdims=True)


def too_sparse(thumbnails: np.ndarray) -> np.ndarray:
    """Which images have too little structure for a hash or their pixels to tell them apart.

    An image's contrast is the deviation d of each thumbnail pixel from the median (the sky);
    the number of pixels that carry it is the participation ratio (sum d^2)^2 / sum d^4, which
    is k when k pixels deviate equally and the rest sit at the sky. The DCT keeps the energy of
    the deviations (Parseval), so when a handful of pixels hold it, every hash coefficient is a
    sum of their few cosine patterns: the hash records where a dot is, not what it is, and two
    point sources at the centre hash alike whatever their class. Sparse: fewer than
    ``MIN_STRUCTURE`` such pixels (under 1% of the 32x32 thumbnail), or an RMS contrast under
    ``MIN_CONTRAST``. A point source scores 1-4 (FIRST compact sources: median 2.6, and 72% of
    all FIRST images are sparse at 96 px of the central 30%); SDSS galaxy cutouts score far more
    (GZ2: 33 at the least; GZ1: 2 of 5,328 below 8).
    """
    d = _deviations(thumbnails)
    power = (d**2).sum(axis=1)
    pixels = power**2 / np.maximum((d**4).sum(axis=1), 1e-12)
    return (pixels < MIN_STRUCTURE) | (np.sqrt(power / d.shape[1]) < MIN_CONTRAST)


def pixel_difference(one: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Mean absolute difference between thumbnail ``one`` and each of ``others``, in units of
    their contrast (mean absolute deviation from the median, averaged over the pair): a dark
    sky, the same in any two images, must not make distinct galaxies look alike."""
    contrast = (np.abs(_deviations(one[None])).mean() + np.abs(_deviations(others)).mean(axis=1)) / 2
    gap = np.abs(one.reshape(1, -1).astype(np.float64) - others.reshape(len(others), -1)).mean(axis=1)
    return gap / np.maximum(contrast, 1e-12)


@dataclass
class Overlap:
    split: str
    path: Path
    other_split: str
    other_path: Path
    kind: str
    """'identical file' or 'near-duplicate'."""
    distance: int
    """Hamming distance of the perceptual hashes (0..256)."""
    pixel_difference: float = 0.0
    """:func:`pixel_difference` of the two thumbnails."""


@dataclass
class Leakage:
    """What the guard compared and found."""

    images: int
    """Val and test images compared with the splits before them."""
    sparse: int
    """Of those, images with too little structure to hash (:func:`too_sparse`): compared as files only."""
    rejected: int
    """Images whose hash matched an earlier one but whose pixels did not."""
    overlaps: list[Overlap]
    """Confirmed duplicates."""

    def summary(self) -> dict:
        return {"images": self.images, "sparse": self.sparse, "rejected": self.rejected,
                "duplicates": len(self.overlaps), "min_structure": MIN_STRUCTURE,
                "max_pixel_difference": MAX_PIXEL_DIFFERENCE}


def describe(summary: dict) -> str:
    """What the guard checked, in words, from :meth:`Leakage.summary` (for the log and the report)."""
    images, sparse = summary["images"], summary["sparse"]
    return (f"{images} val/test image(s) compared with the earlier splits: {images - sparse} by file content, "
            f"perceptual hash and pixels, {sparse} by file content only (too little structure to hash, "
            f"e.g. a point source on blank sky); {summary['rejected']} hash match(es) rejected by the pixels; "
            f"{summary['duplicates']} duplicate(s)")


# Val chooses checkpoints and the decision rule, so test must be clean of val images too.
PAIRS = (("val", "train"), ("test", "train"), ("test", "val"))


def find_overlaps(
    paths: dict[str, list[Path]], hashes: dict[str, np.ndarray], thumbnails: dict[str, np.ndarray],
    digests: dict[str, list[str]], max_distance: int,
) -> Leakage:
    """Images of val (test) identical (same SHA-256 ``digests`` of their stored content) to one
    in train (train or val), or, unless either is :func:`too_sparse`, within ``max_distance``
    bits of its perceptual hash and ``MAX_PIXEL_DIFFERENCE`` of its thumbnail. Each image is
    reported once, against its first match (among hash matches, the closest in pixels)."""
    sparse = {split: too_sparse(thumbnails[split]) for split in paths}
    found, seen, unconfirmed = [], set(), set()
    for split, other in PAIRS:
        index = dict(zip(digests[other], paths[other]))
        usable = np.flatnonzero(~sparse[other])
        candidates = hashes[other][usable]
        for i, (path, digest) in enumerate(zip(paths[split], digests[split])):
            if path in seen:
                continue
            if digest in index:
                found.append(Overlap(split, path, other, index[digest], "identical file", 0))
                seen.add(path)
                continue
            if sparse[split][i]:
                continue
            distance = hash_distance(candidates, hashes[split][i])
            within = distance <= max_distance
            if not within.any():
                continue
            close, gaps = usable[within], distance[within]
            difference = pixel_difference(thumbnails[split][i], thumbnails[other][close])
            best = int(difference.argmin())
            if difference[best] > MAX_PIXEL_DIFFERENCE:
                unconfirmed.add(path)
                continue
            found.append(Overlap(split, path, other, paths[other][close[best]], "near-duplicate", int(gaps[best]),
                                 float(difference[best])))
            seen.add(path)
    images = sum(len(paths[split]) for split in ("val", "test"))
    n_sparse = sum(int(sparse[split].sum()) for split in ("val", "test"))
    return Leakage(images, n_sparse, len(unconfirmed - seen), found)


def write_overlaps(overlaps: list[Overlap], path: Path) -> None:
    rows = ((o.split, str(o.path), o.other_split, str(o.other_path), o.kind, o.distance, f"{o.pixel_difference:.3f}")
            for o in overlaps)
    write_csv(path, ["split", "path", "other_split", "other_path", "kind", "hash_distance", "pixel_difference"], rows)
