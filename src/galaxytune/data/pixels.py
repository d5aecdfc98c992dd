"""Pixel values of any type to 0..255: one scaling for 16-bit, float and HDF5 images alike."""

from __future__ import annotations

import numpy as np


def to_uint8(values: np.ndarray) -> np.ndarray:
    """``values`` scaled linearly from their finite range to 0..255 as uint8 (all zero where the
    range is empty). A NaN or -inf becomes the darkest value and +inf the brightest: one bad pixel
    must not blank the image."""
    arr = np.asarray(values, dtype=np.float64)  # float32 overflows on the difference of extreme values
    finite = arr[np.isfinite(arr)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    arr = np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo)
    return ((arr - lo) / (hi - lo) * 255).astype(np.uint8)
