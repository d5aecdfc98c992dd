"""Decode images into fixed-size uint8 RGB arrays, skipping (and reporting) unreadable files.

Every image is decoded once up front. That pass finds corrupt or truncated files before any
epoch starts and, when the decoded set fits in memory, keeps it, so that epochs cost no
decoding at all (a large win on CPUs; the cutouts are small).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from galaxytune.cache import file_digest
from galaxytune.config import FitsConfig
from galaxytune.console import interactive
from galaxytune.data.leakage import HASH_BYTES, THUMBNAIL_SIDE, grey_thumbnails, perceptual_hash
from galaxytune.data.pixels import to_uint8
from galaxytune.data.readers.fits import is_fits, read_fits
from galaxytune.data.readers.hdf5 import read_row, split_row_path

# A truncated file must raise, not come back silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def _open(path: Path, fits: FitsConfig | None) -> Image.Image:
    """An HDF5 row (``file.h5::17``), a FITS cutout (stretched per ``fits``) or an image file."""
    if split_row_path(path) is not None:
        return Image.fromarray(read_row(path))
    if is_fits(path):
        return Image.fromarray(read_fits(path, fits or FitsConfig()))
    with Image.open(path) as im:
        im.load()
        return im.copy()


def read_image(path: Path, size: int, center_crop: float = 1.0, fits: FitsConfig | None = None) -> np.ndarray:
    """The image at ``path`` as (3, size, size) uint8: square centre crop, then resize.

    Greyscale and 16-bit images become three equal channels scaled to 0..255 (float images: their
    finite range; a NaN or inf pixel becomes the darkest or brightest, it must not blank the image).
    """
    im = _open(path, fits)
    if im.mode in ("I", "I;16", "I;16B", "F"):
        im = Image.fromarray(to_uint8(np.asarray(im)))
    im = im.convert("RGB")
    side = min(im.size) * center_crop
    left, top = (im.width - side) / 2, (im.height - side) / 2
    im = im.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def content_digest(path: Path) -> str:
    """SHA-256 of what an image is stored as: the file's bytes, or an HDF5 row's array."""
    if split_row_path(path) is not None:
        return hashlib.sha256(read_row(path).tobytes()).hexdigest()
    return file_digest(Path(path))


class _Decode(Dataset):
    def __init__(self, paths: list[Path], size: int, center_crop: float, fits: FitsConfig | None, digests: bool):
        self.paths, self.size, self.center_crop, self.fits, self.digests = paths, size, center_crop, fits, digests

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            pixels = torch.from_numpy(read_image(self.paths[i], self.size, self.center_crop, self.fits))
            return i, pixels, content_digest(self.paths[i]) if self.digests else "", ""
        except Exception as exc:  # any decoder failure means: skip this file, report why
            return i, None, "", f"{type(exc).__name__}: {exc}"


def _collate(items):
    return items


def default_workers(requested: int = -1) -> int:
    if requested >= 0:
        return requested
    return min(8, max(0, (os.cpu_count() or 1) - 1))


def iter_decoded(
    paths: list[Path], size: int, center_crop: float, workers: int, batch_size: int, desc: str,
    fits: FitsConfig | None = None, digests: bool = False,
):
    """Stream ``(indices, uint8 batch, digests, unreadable)`` over ``paths``, decoding in workers.

    ``digests``: SHA-256 of each decoded image's stored content (empty unless asked for), taken
    in the decoding workers right after the decode, while the file is still in the OS cache.
    ``unreadable`` lists ``(path, reason)`` for the files of this batch that failed.
    """
    loader = DataLoader(
        _Decode(paths, size, center_crop, fits, digests), batch_size=batch_size, num_workers=workers,
        collate_fn=_collate,
    )
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not interactive()):
        good = [(i, arr, digest) for i, arr, digest, _ in batch if arr is not None]
        bad = [(paths[i], err) for i, arr, _, err in batch if arr is None]
        empty = torch.empty((0, 3, size, size), dtype=torch.uint8)
        pixels = torch.stack([arr for _, arr, _ in good]) if good else empty
        yield [i for i, _, _ in good], pixels, [d for _, _, d in good if d], bad


@dataclass
class Decoded:
    keep: list[int]
    """Indices (into the paths given) of the images that decoded."""
    bad: list[tuple[Path, str]]
    """Unreadable files and the reason."""
    pixels: torch.Tensor | None
    """(len(keep), 3, S, S) uint8 when cached, else None."""
    hashes: np.ndarray
    """(len(keep), 32) packed perceptual hashes, for the leakage guard."""
    thumbnails: np.ndarray
    """(len(keep), 32, 32) uint8 grey thumbnails, for the leakage guard."""
    digests: list[str]
    """SHA-256 of each kept image's stored content, for the leakage guard (empty when not asked for)."""


def decode_all(
    paths: list[Path], size: int, center_crop: float, cache: bool, workers: int, desc: str,
    fits: FitsConfig | None = None, digests: bool = True,
) -> Decoded:
    """Decode every image once; ``digests``: also take each one's SHA-256 for the leakage guard."""
    keep, bad, chunks, hashes, thumbnails, found = [], [], [], [], [], []
    for indices, pixels, batch_digests, failed in iter_decoded(
        paths, size, center_crop, workers, 64, desc, fits, digests=digests
    ):
        keep += indices
        found += batch_digests
        bad += failed
        if indices:
            hashes.append(perceptual_hash(pixels))
            thumbnails.append(grey_thumbnails(pixels))
        if cache:
            chunks.append(pixels)
    pixels = torch.cat(chunks) if cache and chunks else None
    hashes = np.concatenate(hashes) if hashes else np.zeros((0, HASH_BYTES), np.uint8)
    side = THUMBNAIL_SIDE
    thumbnails = np.concatenate(thumbnails) if thumbnails else np.zeros((0, side, side), np.uint8)
    return Decoded(keep, bad, pixels, hashes, thumbnails, found)


class ImageSet(Dataset):
    """(uint8 image, target) pairs, from the in-memory cache or decoded from disk.

    The target is the class index, or with soft targets the vector of vote fractions (``.targets``
    keeps the class indices for metrics and the decision rule either way). With ``counts`` (every
    Galaxy Zoo answer's votes, see galaxytune.data.questions) an item's target is the pair
    ``(target, counts)``.
    """

    def __init__(
        self,
        paths: list[Path],
        targets: list[int],
        size: int,
        center_crop: float = 1.0,
        pixels: torch.Tensor | None = None,
        fits: FitsConfig | None = None,
        soft: list[tuple[float, ...]] | None = None,
        counts: list[tuple[float, ...]] | None = None,
    ):
        self.paths, self.size, self.center_crop, self.fits = paths, size, center_crop, fits
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.soft = None if soft is None else torch.as_tensor(soft, dtype=torch.float32).reshape(len(paths), -1)
        self.counts = None if counts is None else torch.as_tensor(counts, dtype=torch.float32).reshape(len(paths), -1)
        self.pixels = pixels

    @property
    def fit_targets(self) -> torch.Tensor:
        """What training fits: vote fractions with soft targets, else class indices."""
        return self.targets if self.soft is None else self.soft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        target = self.fit_targets[i] if self.counts is None else (self.fit_targets[i], self.counts[i])
        if self.pixels is not None:
            return self.pixels[i], target
        return torch.from_numpy(read_image(self.paths[i], self.size, self.center_crop, self.fits)), target
