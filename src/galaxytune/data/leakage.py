"""Leakage guard: no image of val or test may also be in train, nor a test image in val.

Two checks: identical files (SHA-256 of the bytes) and near-duplicates by a perceptual hash
(the same cutout re-encoded, resized or re-downloaded gives nearly the same hash). Catalogs
built from several sources often hold the same galaxy twice; a test image that is also a
training image inflates every number in the stage table.
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


def perceptual_hash(pixels: torch.Tensor) -> np.ndarray:
    """256-bit DCT hashes of a (n, 3, S, S) uint8 batch, packed as (n, 32) uint8.

    Grey 64x64 thumbnail, 2-D DCT, the 16x16 lowest frequencies against their median: robust to
    compression, resizing and small photometric changes, not to rotation. The usual 64-bit
    hash is too coarse for galaxies (a dark sky around a central blob): on SDSS cutouts,
    distinct galaxies came within 2 bits of each other; with 256 bits the closest distinct pair
    of 6,741 cutouts is 36 bits apart, while resized JPEG-60 copies stayed within 32 (mean 17).
    """
    grey = pixels.float().mean(dim=1, keepdim=True)
    small = torch.nn.functional.interpolate(grey, size=(64, 64), mode="area")[:, 0].numpy()
    low = dctn(small, axes=(1, 2), norm="ortho")[:, :HASH_SIDE, :HASH_SIDE].reshape(len(small), -1)
    bits = low > np.median(low[:, 1:], axis=1, keepdims=True)  # the DC term would skew the median
    return np.packbits(bits, axis=1)


def hash_distance(hashes: np.ndarray, one: np.ndarray) -> np.ndarray:
    """Differing bits between each row of ``hashes`` and the hash ``one``."""
    return POPCOUNT[np.bitwise_xor(hashes, one)].sum(axis=1)


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


# Val chooses checkpoints and the decision rule, so test must be clean of val images too.
PAIRS = (("val", "train"), ("test", "train"), ("test", "val"))


def find_overlaps(
    paths: dict[str, list[Path]], hashes: dict[str, np.ndarray], digests: dict[str, list[str]], max_distance: int
) -> list[Overlap]:
    """Images of val (test) identical (same SHA-256 ``digests`` of their stored content) or
    perceptually within ``max_distance`` bits of one in train (train or val). Each image is
    reported once, against its first match."""
    found, seen = [], set()
    for split, other in PAIRS:
        index = dict(zip(digests[other], paths[other]))
        for path, digest, bits in zip(paths[split], digests[split], hashes[split]):
            if path in seen:
                continue
            distance = hash_distance(hashes[other], bits)
            nearest = int(distance.argmin()) if len(distance) else -1
            if digest in index:
                found.append(Overlap(split, path, other, index[digest], "identical file", 0))
            elif nearest >= 0 and distance[nearest] <= max_distance:
                twin, gap = paths[other][nearest], int(distance[nearest])
                found.append(Overlap(split, path, other, twin, "near-duplicate", gap))
            else:
                continue
            seen.add(path)
    return found


def write_overlaps(overlaps: list[Overlap], path: Path) -> None:
    rows = ((o.split, str(o.path), o.other_split, str(o.other_path), o.kind, o.distance) for o in overlaps)
    write_csv(path, ["split", "path", "other_split", "other_path", "kind", "hash_distance"], rows)
