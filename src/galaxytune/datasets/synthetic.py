"""Synthetic galaxies drawn with GalSim: the embedded default dataset.

Five morphologies, each a sum of physically motivated components seen through a PSF in
three bands (g, r, i) with sky and Poisson noise, composed into colour with an asinh stretch:

- ``elliptical``: a de Vaucouleurs-like Sersic (n ~ 4) spheroid, red;
- ``spiral``: a face-on exponential disk with logarithmic spiral arms and a red bulge;
- ``barred_spiral``: the same with a bar, the arms starting at its ends;
- ``edge_on``: an inclined exponential disk, often with a dust lane;
- ``irregular``: a merging pair of profiles or a clumpy disk of blue star-forming knots.

Size, ellipticity, orientation, brightness and a redshift-like dimming are random, and
everything is deterministic from the seed: image ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import csv
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from galaxytune.cache import cache_home
from galaxytune.console import interactive
from galaxytune.errors import DataError

CLASSES = ("elliptical", "spiral", "barred_spiral", "edge_on", "irregular")
BANDS = ("g", "r", "i")
# Relative flux in g, r, i: old stellar populations are red, star-forming ones blue.
RED, BLUE, WHITE = np.array([0.45, 1.0, 1.35]), np.array([1.1, 1.0, 0.85]), np.array([0.8, 1.0, 1.1])


def default_folder() -> Path:
    """Where ``galaxytune demo`` keeps the generated images: ``synthetic/`` in the galaxytune cache."""
    return cache_home() / "synthetic"


def _galsim():
    try:
        import galsim
    except ImportError:
        raise DataError(
            "The synthetic dataset needs GalSim: pip install galsim "
            "(or reinstall galaxytune, which depends on it)."
        ) from None
    return galsim


@dataclass
class SyntheticSpec:
    n_per_class: int = 600
    image_size: int = 64
    pixel_scale: float = 0.4
    """Arcsec per pixel: 64 px x 0.4" is about an SDSS cutout's field."""
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15


def _spiral_image(rng, npix: int, scale: float, h: float, arms: int, pitch_deg: float, bar_len: float):
    """An intrinsic (unconvolved) face-on disk with log-spiral arms, as an array in arcsec units."""
    c = (np.arange(npix) - npix / 2 + 0.5) * scale
    x, y = np.meshgrid(c, c)
    r = np.hypot(x, y) + 1e-3
    theta = np.arctan2(y, x)
    r0 = max(bar_len, 0.3 * h)
    phase = arms * (theta - np.log(np.maximum(r, r0) / r0) / np.tan(np.radians(pitch_deg)))
    width = rng.uniform(2.0, 4.0)  # sharper arms for larger exponents
    arm = ((1 + np.cos(phase)) / 2) ** width
    strength = rng.uniform(1.5, 3.0)
    disk = np.exp(-r / h) * (0.35 + strength * arm * (r > 0.6 * r0))
    return disk


def _draw_one(index: int, label: str, spec: SyntheticSpec) -> np.ndarray:
    galsim = _galsim()
    rng = np.random.default_rng([spec.seed, index])
    gs_rng = galsim.BaseDeviate(int(rng.integers(1, 2**31)))
    npix, scale = spec.image_size, spec.pixel_scale
    z = rng.uniform(0.02, 0.12)
    dim = (0.05 / z) ** 0.5  # apparent size falls with distance
    flux = rng.uniform(4e4, 1.5e5) * (0.05 / z) ** 1.2
    angle = rng.uniform(0, 360) * galsim.degrees
    components = []  # (profile, colour)

    if label == "elliptical":
        hlr = rng.uniform(1.2, 2.6) * dim
        q = rng.uniform(0.55, 1.0)
        prof = galsim.Sersic(n=rng.uniform(3.5, 4.5), half_light_radius=hlr).shear(q=q, beta=angle)
        components.append((prof, RED))
    elif label in ("spiral", "barred_spiral"):
        h = rng.uniform(1.5, 2.5) * dim
        barred = label == "barred_spiral"
        bar_len = rng.uniform(1.2, 2.0) * h if barred else 0.0
        arms = int(rng.choice([2, 2, 3]))
        arr = _spiral_image(rng, npix * 2, scale / 2, h, arms, rng.uniform(12, 25), bar_len)
        face_on = [
            (galsim.InterpolatedImage(galsim.Image(arr, scale=scale / 2), flux=0.7), BLUE),
            (galsim.Sersic(n=3.0, half_light_radius=rng.uniform(0.25, 0.45) * h, flux=rng.uniform(0.12, 0.25)), RED),
        ]
        if barred:  # along x, where the arms start
            bar = galsim.Sersic(n=0.5, half_light_radius=0.55 * bar_len, flux=rng.uniform(0.2, 0.3))
            face_on.append((bar.shear(q=rng.uniform(0.18, 0.3), beta=0 * galsim.degrees), WHITE))
        # Rotate the galaxy, then view it at a mild random inclination.
        q, beta = rng.uniform(0.6, 1.0), rng.uniform(0, 360) * galsim.degrees
        components += [(prof.rotate(angle).shear(q=q, beta=beta), colour) for prof, colour in face_on]
    elif label == "edge_on":
        hlr = rng.uniform(1.6, 3.0) * dim
        disk = galsim.InclinedExponential(
            inclination=rng.uniform(84, 90) * galsim.degrees, half_light_radius=hlr,
            scale_h_over_r=rng.uniform(0.08, 0.15),
        )
        # Draw intrinsically, add the dust lane along the major axis, then see it through the PSF.
        img = disk.drawImage(nx=npix * 2, ny=npix * 2, scale=scale / 2, method="no_pixel").array
        if rng.random() < 0.7:
            c = (np.arange(npix * 2) - npix + 0.5) * scale / 2
            yy = c[:, None]
            img = img * (1 - rng.uniform(0.5, 0.85) * np.exp(-0.5 * (yy / (0.04 * hlr + 0.1)) ** 2))
        lane = galsim.InterpolatedImage(galsim.Image(img, scale=scale / 2), flux=1.0).rotate(angle)
        components.append((lane, WHITE))
        components.append((galsim.Sersic(n=2.0, half_light_radius=0.25 * hlr).withFlux(0.12).rotate(angle), RED))
    else:  # irregular: a merger or a clumpy star-forming disk
        if rng.random() < 0.5:
            sep = rng.uniform(2.5, 5.0) * dim
            offset = rng.uniform(0, 2 * np.pi)
            for sign, f in ((1, 1.0), (-1, rng.uniform(0.4, 1.0))):
                prof = galsim.Sersic(n=rng.uniform(1.0, 4.0), half_light_radius=rng.uniform(0.7, 1.4) * dim)
                prof = prof.shear(q=rng.uniform(0.4, 1.0), beta=rng.uniform(0, 360) * galsim.degrees)
                dx, dy = sign * sep / 2 * np.cos(offset), sign * sep / 2 * np.sin(offset)
                components.append((prof.withFlux(f).shift(dx, dy), RED if rng.random() < 0.5 else WHITE))
            # A tidal tail of faint knots.
            knots = galsim.RandomKnots(12, half_light_radius=sep, flux=0.3, rng=gs_rng)
            components.append((knots, BLUE))
        else:
            hlr = rng.uniform(1.2, 2.4) * dim
            base = galsim.Exponential(half_light_radius=hlr).shear(q=rng.uniform(0.4, 1.0), beta=angle)
            components.append((base.withFlux(0.4), WHITE))
            knots = galsim.RandomKnots(int(rng.integers(6, 15)), half_light_radius=hlr, flux=0.6, rng=gs_rng)
            components.append((knots.shift(*rng.normal(0, 0.3 * hlr, 2)), BLUE))

    total = sum(c[0].flux for c in components)
    sky = rng.uniform(150, 400)
    bands = []
    for b in range(3):
        psf = galsim.Moffat(beta=3.0, fwhm=rng.uniform(0.9, 1.6))
        gal = galsim.Add([prof * (colour[b] / total) for prof, colour in components]).withScaledFlux(flux)
        image = galsim.Convolve(gal, psf).drawImage(nx=npix, ny=npix, scale=scale)
        image += sky
        image.addNoise(galsim.PoissonNoise(gs_rng))
        bands.append(image.array - sky)
    return _to_rgb(np.stack(bands), flux / (npix * npix))


def _to_rgb(gri: np.ndarray, soft: float) -> np.ndarray:
    """Lupton-style asinh composite of (g, r, i) into 8-bit RGB (i->R, r->G, g->B)."""
    mean = gri.mean(axis=0)
    stretch = np.arcsinh(np.clip(mean, 0, None) / (soft * 3.0)) / np.maximum(mean, 1e-9)
    rgb = np.stack([gri[2], gri[1], gri[0]]) * stretch
    rgb = np.clip(rgb / 3.0, 0, 1)
    return (rgb.transpose(1, 2, 0) * 255).astype(np.uint8)


def _draw_range(args) -> list[tuple[int, str, np.ndarray]]:
    start, stop, spec = args
    return [(i, CLASSES[i % len(CLASSES)], _draw_one(i, CLASSES[i % len(CLASSES)], spec)) for i in range(start, stop)]


def _split_of(i: int, n: int, spec: SyntheticSpec) -> str:
    # Deterministic split by position within each class.
    position = (i // len(CLASSES)) / max(1, n)
    if position < spec.test_fraction:
        return "test"
    if position < spec.test_fraction + spec.val_fraction:
        return "val"
    return "train"


def generate(out_dir: str | Path, spec: SyntheticSpec | None = None, workers: int = 2) -> Path:
    """Write ``out_dir/{train,val,test}/<class>/*.png`` and ``labels.csv``; return ``out_dir``.

    Does nothing if the folder already holds a dataset made with the same spec.
    """
    spec = spec or SyntheticSpec()
    out = Path(out_dir).expanduser()
    stamp = out / "synthetic.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == asdict(spec):
        return out
    _galsim()
    out.mkdir(parents=True, exist_ok=True)
    n_total = spec.n_per_class * len(CLASSES)
    chunk = 50
    jobs = [(s, min(s + chunk, n_total), spec) for s in range(0, n_total, chunk)]
    rows = []
    from tqdm.auto import tqdm

    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for results in tqdm(pool.map(_draw_range, jobs), total=len(jobs), desc="drawing galaxies", unit="chunk",
                            disable=not interactive()):
            for i, label, pixels in results:
                split = _split_of(i, spec.n_per_class, spec)
                rel = Path(split) / label / f"{i:06d}.png"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(out / rel)
                rows.append((str(rel), label, split))
    with open(out / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "label", "split"])
        writer.writerows(sorted(rows))
    stamp.write_text(json.dumps(asdict(spec)))
    return out
