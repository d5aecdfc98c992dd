"""Galaxy-aware augmentation on batches: the 8 rotations and flips of the square, and the
label permutations they imply; any-angle turns, zoom and shift; seeing and depth (blur, noise).

Galaxies have no preferred orientation on the sky, so these transforms cost nothing: they run
on whole batches, on the device. Most labels survive them, but a mirror flip turns a clockwise
spiral into an anticlockwise one. ``finetune.mirror_swap`` declares such pairs of classes;
training swaps the targets of mirrored images and test-time augmentation swaps the logits of
mirrored views back (see :func:`mirror_permutation`).

Rotations keep every label of galaxy morphology (a turn keeps a spiral's winding sense, and no
class is tied to a direction in the cutout), so there is no option for classes that a quarter
turn would change; such classes would need a permutation per rotation as well.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from galaxytune.errors import ConfigError

N_DIHEDRAL = 8


def mirrored(k):
    """Whether dihedral element(s) ``k`` (an int or a tensor) include the mirror flip."""
    return k >= 4


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element ``k`` (0..7) of the dihedral group on the last two axes: a mirror flip when
    k >= 4, then ``k % 4`` quarter turns."""
    if mirrored(k):
        x = x.flip(-1)
    return torch.rot90(x, k % 4, dims=(-2, -1))


def random_dihedral(
    x: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image of the batch under its own random dihedral transform; returns the images and
    the element (0..7) each one got, so that labels can follow (:func:`dihedral_targets`)."""
    which = torch.randint(0, N_DIHEDRAL, (x.shape[0],), generator=generator).to(x.device)
    out = torch.empty_like(x)
    for k in range(N_DIHEDRAL):
        mask = which == k
        if mask.any():
            out[mask] = dihedral(x[mask], k)
    return out, which


def dihedral_targets(y: torch.Tensor, which: torch.Tensor, mirror: torch.Tensor) -> torch.Tensor:
    """Targets of images transformed by ``which``: mirrored ones take class ``mirror[y]``, or
    for soft targets (one row of class fractions per image) the columns permuted by ``mirror``."""
    if y.dim() == 2:
        return torch.where(mirrored(which)[:, None], y[:, mirror], y)
    return torch.where(mirrored(which), mirror[y], y)


def mirror_permutation(classes: list[str], pairs: list[list[str]]) -> list[int]:
    """``perm[i]``: the class that a mirror flip turns class ``i`` into (``i`` unless a pair of
    ``pairs`` swaps it). Names must be classes of the data, each in one pair at most."""
    index = {c: i for i, c in enumerate(classes)}
    perm = list(range(len(classes)))
    for pair in pairs:
        unknown = [c for c in pair if c not in index]
        if unknown:
            raise ConfigError(
                f"finetune.mirror_swap names {', '.join(map(repr, unknown))}, not a class of the data "
                f"(classes: {', '.join(classes)})."
            )
        a, b = (index[c] for c in pair)
        if perm[a] != a or perm[b] != b:
            raise ConfigError(f"finetune.mirror_swap: {pair} repeats a class already in another pair.")
        perm[a], perm[b] = b, a
    return perm


def unit_float(x: torch.Tensor) -> torch.Tensor:
    """Images as floats in [0, 1]: uint8 pixels scaled, float images as they are."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


def per_image_uniform(x: torch.Tensor, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    """One value per image of the batch ``x``, uniform in [low, high], on ``x``'s device (drawn on
    the CPU, where ``generator`` lives)."""
    return low + (high - low) * torch.rand(x.shape[0], generator=generator).to(x.device)


def random_affine(
    x: torch.Tensor, any_angle: bool, zoom: float, shift: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Each image turned by its own random angle (any angle, or none when ``any_angle`` is off),
    scaled by a factor in [1 - zoom, 1 + zoom] and shifted by up to ``shift`` of its side; the
    sky that comes into view at the corners is black. Returns float images in [0, 1].

    Any angle, not just quarter turns: a galaxy has no orientation, and 8 views of each training
    image are few over 20 epochs. Zoom and shift stand in for the spread of galaxy sizes and of
    centring in survey cutouts. No label changes: none of these mirror the image.
    """
    x = unit_float(x)

    def uniform(low: float, high: float) -> torch.Tensor:
        return per_image_uniform(x, low, high, generator)

    angle = uniform(0.0, 2 * math.pi) if any_angle else torch.zeros(x.shape[0], device=x.device)
    scale = 1.0 / uniform(1.0 - zoom, 1.0 + zoom)  # the grid samples the inverse map
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    tx, ty = uniform(-2 * shift, 2 * shift), uniform(-2 * shift, 2 * shift)  # grid units span 2
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_brightness(x: torch.Tensor, max_gain: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image brightened by its own factor, uniform in [1, 1 + ``max_gain``], and clipped at
    the top of the range: faint emission (radio lobes, outer discs) comes up as in a deeper image
    while the brightest pixels saturate, as a display stretch would show them. Brightening only:
    for radio images, Maslej-Krešňáková et al. (2021, arXiv:2107.00385) found darker copies
    hurt. Returns float images in [0, 1]."""
    x = unit_float(x)
    gain = per_image_uniform(x, 1.0, 1.0 + max_gain, generator).view(-1, 1, 1, 1)
    return (x * gain).clamp(0.0, 1.0)


def random_blur(x: torch.Tensor, max_sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image blurred by a Gaussian of its own sigma, uniform in [0, ``max_sigma``] pixels:
    the seeing (the point spread function) changes from night to night and field to field, and a
    class must not hang on how sharp one survey's images are. Edges are reflected, so no dark
    frame comes in. Returns float images in [0, 1]."""
    x = unit_float(x)
    n, c, h, w = x.shape
    radius = max(1, math.ceil(3 * max_sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    sigma = per_image_uniform(x, 0.0, max_sigma, generator).clamp_min(1e-3)  # ~0: one tap, the image unchanged
    kernel = torch.exp(-0.5 * (offsets / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # one per image and channel
    flat = F.pad(x.reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)  # separable: down the columns,
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)  # then along the rows
    return flat.reshape(n, c, h, w)


def random_noise(x: torch.Tensor, max_std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise of each image's own standard deviation, uniform in [0, ``max_std``] of the
    pixel range: survey depth varies, and the class must not hang on how clean the sky is.
    Greyscale images (all channels equal, e.g. radio) get the same noise in every channel, so
    they stay grey. Returns float images in [0, 1], clipped."""
    x = unit_float(x)
    n, c, h, w = x.shape
    grey = bool((x == x[:, :1]).all())
    std = per_image_uniform(x, 0.0, max_std, generator).view(-1, 1, 1, 1)
    noise = torch.randn((n, 1 if grey else c, h, w), generator=generator).to(x.device)
    return (x + std * noise).clamp(0.0, 1.0)
