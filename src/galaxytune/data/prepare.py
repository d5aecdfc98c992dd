"""From a data path and its settings to decoded, labelled train/val/test sets."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from galaxytune.config import DataConfig
from galaxytune.data.images import ImageSet, decode_all, default_workers
from galaxytune.data.sources import SPLITS, Sample, find_labelled
from galaxytune.data.splits import check_labels, make_splits, write_splits
from galaxytune.errors import DataError


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


def decode_samples(
    samples: list[Sample], class_index: dict[str, int], cfg: DataConfig, cache: bool, desc: str
) -> tuple[ImageSet, list[Sample], list[tuple[Path, str]]]:
    """Decode ``samples``; return the readable ones as an ImageSet, and the unreadable files."""
    paths = [s.path for s in samples]
    decoded = decode_all(paths, cfg.image_size, cfg.center_crop, cache, default_workers(cfg.num_workers), desc)
    kept = [samples[i] for i in decoded.keep]
    dataset = ImageSet(
        [s.path for s in kept], [class_index[s.label] for s in kept],
        cfg.image_size, cfg.center_crop, decoded.pixels,
    )
    return dataset, kept, decoded.bad


def write_unreadable(bad: list[tuple[Path, str]], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "error"])
        writer.writerows((str(p), err) for p, err in bad)


def prepare(cfg: DataConfig, run_dir: Path) -> Prepared:
    """Find, split and decode the data; record the split and any unreadable images in ``run_dir``."""
    found = find_labelled(cfg.path, cfg.path_column, cfg.label_column)
    splits = make_splits(found, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    classes = sorted({s.label for s in splits["train"]})
    index = {c: i for i, c in enumerate(classes)}
    cache = want_cache(cfg, sum(len(v) for v in splits.values()))
    sets, kept, unreadable = {}, {}, []
    for split in SPLITS:
        sets[split], kept[split], bad = decode_samples(splits[split], index, cfg, cache, f"decode {split}")
        unreadable += bad
    if unreadable:
        write_unreadable(unreadable, run_dir / "unreadable_images.csv")
        print(
            f"Skipped {len(unreadable)} unreadable image(s), e.g. {unreadable[0][0]} "
            f"({unreadable[0][1]}); all are listed in {run_dir / 'unreadable_images.csv'}."
        )
        if sorted({s.label for s in kept["train"]}) != classes:
            lost = sorted(set(classes) - {s.label for s in kept["train"]})
            raise DataError(f"Every training image of class(es) {', '.join(lost)} is unreadable.")
        check_labels(kept)
    write_splits(kept, run_dir / "splits.csv")
    return Prepared(classes, sets, kept, unreadable)
