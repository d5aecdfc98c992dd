"""Test-time augmentation over the 8 rotations and flips of the square.

Its own module so that :mod:`galaxytune.inference.onnx` (which puts TTA inside the exported
graph) and :mod:`galaxytune.inference.predict` (which loads exported files) need not import
each other.
"""

from __future__ import annotations

import torch
from torch import nn

from galaxytune.data.transforms import N_DIHEDRAL, dihedral, mirrored


class DihedralTTA(nn.Module):
    """``net``'s logits averaged over the 8 rotations and flips of its input.

    A mirrored view of a clockwise spiral looks anticlockwise, so before averaging, the logits
    of a mirrored view are put back in the original's class order (``mirror``, see
    :func:`galaxytune.data.transforms.mirror_permutation`); otherwise the average would blur
    every pair of classes that a flip swaps into one.
    """

    def __init__(self, net: nn.Module, mirror: list[int]):
        super().__init__()
        self.net, self.mirror = net, mirror

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = [self.net(dihedral(x, k)).float() for k in range(N_DIHEDRAL)]
        return torch.stack([v[:, self.mirror] if mirrored(k) else v for k, v in enumerate(views)]).mean(0)
