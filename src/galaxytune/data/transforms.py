"""Galaxy-aware augmentation on batches: the 8 rotations and flips of the square.

Galaxies have no preferred orientation on the sky, so these transforms keep the label (for
the classes handled here) and cost nothing: they run on whole batches, on the device.
"""

from __future__ import annotations

import torch

N_DIHEDRAL = 8


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element ``k`` (0..7) of the dihedral group on the last two axes: a mirror flip when
    k >= 4, then ``k % 4`` quarter turns."""
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def random_dihedral(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image of the batch under its own random dihedral transform."""
    which = torch.randint(0, N_DIHEDRAL, (x.shape[0],), generator=generator).to(x.device)
    out = torch.empty_like(x)
    for k in range(N_DIHEDRAL):
        mask = which == k
        if mask.any():
            out[mask] = dihedral(x[mask], k)
    return out
