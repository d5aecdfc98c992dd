"""The central type of the data pipeline: a :class:`Sample` (an image path and its label), and
the split names it is grouped under. Every reader ends here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from galaxytune.errors import DataError

SPLITS = ("train", "val", "test")
# Names some public sets use for a split (folder names, a catalog's 'split' column).
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    fractions: tuple[float, ...] | None = None
    """Vote fractions over the classes (in sorted class order) when training on soft targets, or
    with rule redraws (``data.labels.vote_redraws``) each rule class's share of the re-votes."""
    counts: tuple[float, ...] | None = None
    """Votes for every answer of every question (galaxytune.data.questions), where the table has them."""


class SplitSamples(dict):
    """Split name -> its samples, and the Galaxy Zoo questions whose answer counts the samples
    carry (empty for data without vote counts)."""

    def __init__(self, by_split: dict[str, list[Sample]], questions: list | None = None):
        super().__init__(by_split)
        self.questions = list(questions or [])


def split_name(text: str, where: str) -> str:
    """The split a table's 'split' cell names (any alias, any case; empty: train); ``where``
    (file and line) starts the error for any other text."""
    name = text.strip().lower() or "train"
    split = next((s for s, names in SPLIT_ALIASES.items() if name in names), None)
    if split is None:
        raise DataError(f"{where}: split '{text.strip()}' is not train/val/test.")
    return split


def is_file(path: Path) -> bool:
    """``path.is_file()``, but False where the OS refuses the name (too long, ...) instead of raising."""
    try:
        return path.is_file()
    except OSError:
        return False
