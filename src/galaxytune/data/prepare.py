"""From a data path and its settings to decoded, labelled train/val/test sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from galaxytune.config import DataConfig
from galaxytune.data.formats import find_samples
from galaxytune.data.images import Decoded, ImageSet, decode_all, default_workers
from galaxytune.data.leakage import find_overlaps, write_overlaps
from galaxytune.data.sources import SPLITS, Sample
from galaxytune.data.splits import make_splits, write_splits
from galaxytune.errors import DataError
from galaxytune.files import write_csv


@dataclass
class Prepared:
    classes: list[str]
    sets: dict[str, ImageSet]
    samples: dict[str, list[Sample]]
    unreadable: list[tuple[Path, str]]


def want_cache(cfg: DataConfig, n_images: int) -> bool:
    if cfg.cache_images != "auto":
        return cfg.cache_images == "yes"
    return n_images * 3 * cfg.image_size**2 <= cfg.cache_limit_gb * 2**30


def write_unreadable(bad: list[tuple[Path, str]], path: Path) -> None:
    write_csv(path, ["path", "error"], ((str(p), err) for p, err in bad))


def guard_leakage(
    splits: dict[str, list[Sample]], decoded: Decoded, row: dict[Path, int], cfg: DataConfig, run_dir: Path | None
) -> None:
    """Report val/test images also in train, and test images also in val; stop the run if configured to."""
    paths = {split: [s.path for s in samples] for split, samples in splits.items()}
    split_hashes = {split: decoded.hashes[[row[p] for p in ps]] for split, ps in paths.items()}
    split_digests = {split: [decoded.digests[row[p]] for p in ps] for split, ps in paths.items()}
    overlaps = find_overlaps(paths, split_hashes, split_digests, cfg.leakage_max_distance)
    if not overlaps:
        return
    where = ""
    if run_dir is not None:
        write_overlaps(overlaps, run_dir / "leakage.csv")
        where = f"; all are listed in {run_dir / 'leakage.csv'}"
    first = overlaps[0]
    message = (
        f"{len(overlaps)} val/test image(s) are also in an earlier split, e.g. {first.path} ({first.kind} of "
        f"{first.other_split} image {first.other_path}){where}. Remove the duplicates so that test measures "
        "unseen galaxies"
    )
    if cfg.leakage == "fail":
        raise DataError(message + ", or set data.leakage=warn.")
    print(f"Warning: {message}.")


def prepare(cfg: DataConfig, run_dir: Path | None) -> Prepared:
    """Find, decode and split the data; record the split and any unreadable images in ``run_dir``
    (None: write nothing, as in the non-main processes of a multi-process run).

    Unreadable images are dropped before splitting, so they cannot leave a split lopsided.
    """
    found = find_samples(cfg)
    everything = [s for split in SPLITS for s in found.get(split, [])]
    decoded = decode_all(
        [s.path for s in everything], cfg.image_size, cfg.center_crop,
        want_cache(cfg, len(everything)), default_workers(cfg.num_workers), "decode images", cfg.fits,
        digests=cfg.leakage != "off",
    )
    if decoded.bad and run_dir is not None:
        write_unreadable(decoded.bad, run_dir / "unreadable_images.csv")
        print(
            f"Skipped {len(decoded.bad)} unreadable image(s), e.g. {decoded.bad[0][0]} "
            f"({decoded.bad[0][1]}); all are listed in {run_dir / 'unreadable_images.csv'}."
        )
    if decoded.bad:
        bad = {p for p, _ in decoded.bad}
        found = {split: [s for s in samples if s.path not in bad] for split, samples in found.items()}
        emptied = sorted({s.label for s in everything} - {s.label for v in found.values() for s in v})
        if emptied:
            raise DataError(f"Every image of class(es) {', '.join(emptied)} is unreadable; see unreadable_images.csv.")
    splits = make_splits(found, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    # Soft targets span every answer of the question, even one that is never the top answer in train.
    classes = sorted(cfg.labels.soft) if cfg.labels.soft else sorted({s.label for s in splits["train"]})
    index = {c: i for i, c in enumerate(classes)}
    # Row of each readable sample in the decoded pixel block.
    row = {everything[i].path: r for r, i in enumerate(decoded.keep)}
    sets = {}
    for split, samples in splits.items():
        pixels = decoded.pixels[[row[s.path] for s in samples]] if decoded.pixels is not None else None
        sets[split] = ImageSet(
            [s.path for s in samples], [index[s.label] for s in samples], cfg.image_size, cfg.center_crop, pixels,
            cfg.fits, [s.fractions for s in samples] if cfg.labels.soft else None,
        )
    if run_dir is not None:
        write_splits(splits, run_dir / "splits.csv")
    if cfg.leakage != "off":
        guard_leakage(splits, decoded, row, cfg, run_dir)
    return Prepared(classes, sets, splits, decoded.bad)
