"""FITS cutouts to 8-bit RGB: choose the bands, stretch each one, never let NaN or inf through.

A file's planes are its image HDUs in order, a cube contributing each of its planes. Several
files per galaxy (one band each) are named by ``data.fits.band_files``: the sample is the file
with the first token, the others are found by replacing that token.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from galaxytune.config import FitsConfig
from galaxytune.errors import DataError

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fz")


def is_fits(path: Path) -> bool:
    return path.name.lower().endswith(FITS_SUFFIXES)


def is_other_band(path: Path, fits: FitsConfig) -> bool:
    """A FITS file of a band other than the first, with one file per band (``fits.band_files``):
    it is read together with the first band's file, not as a galaxy of its own."""
    return bool(fits.band_files) and is_fits(path) and fits.band_files[0] not in path.name


def band_paths(path: Path, band_files: list[str]) -> list[Path]:
    """The files holding the bands of the galaxy at ``path`` (just ``path`` without band files)."""
    if not band_files:
        return [path]
    at = path.name.rfind(band_files[0])
    if at < 0:
        raise DataError(
            f"{path.name} does not contain '{band_files[0]}', the first of data.fits.band_files; "
            "list the first band's file for each galaxy."
        )
    head, tail = path.name[:at], path.name[at + len(band_files[0]):]
    return [path.with_name(head + token + tail) for token in band_files]


def _planes(path: Path) -> list[np.ndarray]:
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdus:
            planes = []
            for hdu in hdus:
                if not hdu.is_image or hdu.data is None:
                    continue  # tables and empty primary headers
                data = np.asarray(hdu.data, dtype=np.float32)
                while data.ndim > 2 and data.shape[0] == 1:  # radio images come as (1, 1, H, W)
                    data = data[0]
                if data.ndim == 2:
                    planes.append(data)
                elif data.ndim == 3:
                    planes += list(data)
                else:
                    raise DataError(f"{path}: HDU {hdu.name} has {data.ndim} axes; expected a 2-D image or a cube.")
    except DataError:
        raise
    except Exception as exc:  # astropy raises many kinds of error on damaged files: say which
        raise DataError(f"{path} is not a readable FITS file ({type(exc).__name__}: {exc}).") from exc
    if not planes:
        raise DataError(f"{path} holds no image data (only tables or empty HDUs).")
    return planes


def _choose(planes: list[np.ndarray], bands: list[int], path: Path) -> list[np.ndarray]:
    if bands:
        if max(bands) >= len(planes):
            raise DataError(f"{path} has {len(planes)} plane(s); data.fits.bands={bands} asks for plane {max(bands)}.")
        planes = [planes[b] for b in bands]
    if len(planes) not in (1, 3):
        raise DataError(
            f"{path} has {len(planes)} planes: set data.fits.bands to the three shown as red, green, blue "
            "(or one for greyscale), counted from 0."
        )
    if len({p.shape for p in planes}) > 1:
        raise DataError(f"{path}: the chosen bands differ in shape ({', '.join(str(p.shape) for p in planes)}).")
    return planes


def stretch(plane: np.ndarray, opts: FitsConfig) -> np.ndarray:
    """One band to uint8: clip to its percentiles, then linear or asinh.

    NaN and -inf become the low clip level and +inf the high one, so that masked or saturated
    pixels neither propagate nor move the percentiles of the real ones.
    """
    finite = np.isfinite(plane)
    if not finite.any():
        return np.zeros(plane.shape, np.uint8)
    lo, hi = np.percentile(plane[finite], opts.percentiles)
    x = np.nan_to_num(plane, nan=lo, posinf=hi, neginf=lo)
    if hi <= lo:
        return np.zeros(plane.shape, np.uint8)
    x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    if opts.stretch == "asinh":
        # Small softening: faint outskirts lifted, bright cores compressed (Lupton et al. 2004).
        x = np.arcsinh(x / opts.asinh_softening) / np.arcsinh(1.0 / opts.asinh_softening)
    return np.round(x * 255).astype(np.uint8)


def read_fits(path: Path, opts: FitsConfig) -> np.ndarray:
    """The galaxy at ``path`` as (H, W, 3) uint8."""
    planes = [p for file in band_paths(path, opts.band_files) for p in _planes(file)]
    chosen = [stretch(p, opts) for p in _choose(planes, opts.bands, path)]
    return np.stack(chosen * 3 if len(chosen) == 1 else chosen, axis=-1)
