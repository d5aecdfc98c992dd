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

    def __init__(self, net: nn.Module, mirror: list[int], together: bool = False):
        """``together``: the 8 views go through ``net`` as one batch of 8n (an exported graph then
        holds one copy of the network, not 8); else one view at a time (an eighth of the memory)."""
        super().__init__()
        self.net, self.mirror, self.together = net, mirror, together

    def views(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of the 8 views, shape (8, n, classes), each in the original's class order;
        view 0 is the image as it is."""
        if self.together:
            out = self.net(torch.cat([dihedral(x, k) for k in range(N_DIHEDRAL)])).float()
            out = out.reshape(N_DIHEDRAL, -1, out.shape[-1])
        else:
            out = torch.stack([self.net(dihedral(x, k)).float() for k in range(N_DIHEDRAL)])
        return torch.stack([v[:, self.mirror] if mirrored(k) else v for k, v in enumerate(out)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.views(x).mean(0)
