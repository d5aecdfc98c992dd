"""Train/val/test splits: taken from disk where present, otherwise stratified with a fixed seed.

Whatever is used is written to ``splits.csv`` in the run folder, so a run can be reproduced
and a later evaluation can check it never saw training images.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sklearn.model_selection import train_test_split

from galaxytune.data.samples import SPLITS, Sample
from galaxytune.errors import DataError
from galaxytune.files import write_csv


def _carve(samples: list[Sample], fraction: float, seed: int, name: str) -> tuple[list, list]:
    """Split off ``fraction`` of ``samples`` stratified by label: (rest, carved)."""
    counts = Counter(s.label for s in samples)
    rare = sorted(label for label, n in counts.items() if n < 2)
    if rare:
        raise DataError(
            f"Cannot carve a stratified {name} split: class(es) {', '.join(rare)} have fewer "
            f"than 2 images. Add images, or provide a {name}/ folder yourself."
        )
    n_carve = max(round(fraction * len(samples)), len(counts))
    if n_carve >= len(samples):
        raise DataError(f"Too few images ({len(samples)}) to carve a {name} split.")
    rest, carved = train_test_split(
        samples, test_size=n_carve, random_state=seed, stratify=[s.label for s in samples]
    )
    return list(rest), list(carved)


def make_splits(
    found: dict[str, list[Sample]], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Sample]]:
    """Fill in missing val/test splits from train, then check the labels are usable."""
    splits = {k: list(v) for k, v in found.items()}
    # The fractions refer to the whole pool, so the test split is carved first.
    pool = len(splits["train"])
    if "test" not in splits:
        splits["train"], splits["test"] = _carve(splits["train"], test_fraction, seed, "test")
    if "val" not in splits:
        share = val_fraction * pool / len(splits["train"])
        splits["train"], splits["val"] = _carve(splits["train"], share, seed + 1, "val")
    check_labels(splits)
    return splits


def check_labels(splits: dict[str, list[Sample]]) -> None:
    train_classes = {s.label for s in splits["train"]}
    if len(train_classes) < 2:
        raise DataError(f"The train split has only one class ({', '.join(train_classes)}); need two or more.")
    for split in ("val", "test"):
        extra = sorted({s.label for s in splits[split]} - train_classes)
        if extra:
            raise DataError(
                f"The {split} split has class(es) {', '.join(extra)} that the train split lacks. "
                "Add training images of those classes or remove them from the split."
            )
    val_classes = {s.label for s in splits["val"]}
    if len(val_classes) < 2:
        raise DataError(
            f"The val split holds a single class ({', '.join(val_classes)}): early stopping and "
            "the decision rule need several. Add images of the other classes to val."
        )


def write_splits(splits: dict[str, list[Sample]], path: Path) -> None:
    rows = ((str(s.path), s.label, split) for split in SPLITS for s in splits.get(split, []))
    write_csv(path, ["path", "label", "split"], rows)
