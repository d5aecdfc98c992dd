"""From a data path and its settings to decoded, labelled train/val/test sets."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from galaxytune.cache import cache_home, key_of, load_arrays, save_arrays
from galaxytune.config import DataConfig
from galaxytune.console import ensure_console_logging
from galaxytune.data.formats import find_samples
from galaxytune.data.images import Decoded, ImageSet, content_digest, decode_all, default_workers
from galaxytune.data.label_rules import parse_rules
from galaxytune.data.leakage import describe, find_overlaps, write_overlaps
from galaxytune.data.questions import Question
from galaxytune.data.samples import SPLITS, Sample
from galaxytune.data.splits import make_splits, write_splits
from galaxytune.errors import DataError
from galaxytune.files import write_csv, write_json
from galaxytune.run_folder import RunFolder

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    classes: list[str]
    sets: dict[str, ImageSet]
    samples: dict[str, list[Sample]]
    unreadable: list[tuple[Path, str]]
    questions: list[Question]
    """Galaxy Zoo questions whose answer counts every set carries (empty: none)."""
    cache_key: str | None = None
    """Key of the decoded images in the disk cache (None: not cached), for keys derived from it."""


def decode_cached(cfg: DataConfig, paths: list[Path], cache: bool) -> tuple[Decoded, str | None]:
    """Every image decoded, from the disk cache (``data.disk_cache``) where an earlier run left
    them; and the cache key of the decoded set (None: no disk cache)."""
    folder = disk_cache_folder(cfg) if cache else None
    workers = default_workers(cfg.num_workers)
    if folder is None:
        return decode_all(paths, cfg.image_size, cfg.center_crop, cache, workers, "decode images", cfg.fits,
                          digests=cfg.leakage != "off"), None
    digests = [_digest_or_empty(p) for p in paths]
    key = key_of("decoded", cfg.image_size, cfg.center_crop, asdict(cfg.fits), digests)
    entry = load_arrays(folder, "decoded", key)
    if entry is not None and "thumbnails" in entry:  # entries written before the thumbnails are rewritten
        keep = entry["keep"].tolist()
        bad = [(paths[i], str(reason)) for i, reason in zip(entry["bad"].tolist(), entry["reasons"])]
        log.info(f"Decoded images read from the cache ({folder}).")
        return Decoded(keep, bad, torch.from_numpy(entry["pixels"]), entry["hashes"], entry["thumbnails"],
                       [digests[i] for i in keep]), key
    decoded = decode_all(paths, cfg.image_size, cfg.center_crop, True, workers, "decode images", cfg.fits,
                         digests=False)
    decoded.digests = [digests[i] for i in decoded.keep]
    index = {p: i for i, p in enumerate(paths)}
    pixels = decoded.pixels if decoded.pixels is not None else torch.zeros((0, 3, cfg.image_size, cfg.image_size))
    save_arrays(folder, "decoded", key, {
        "keep": np.array(decoded.keep, dtype=np.int64), "pixels": pixels.numpy(), "hashes": decoded.hashes,
        "thumbnails": decoded.thumbnails,
        "bad": np.array([index[p] for p, _ in decoded.bad], dtype=np.int64),
        "reasons": np.array([reason for _, reason in decoded.bad], dtype=str),
    })
    return decoded, key


def _digest_or_empty(path: Path) -> str:
    try:
        return content_digest(path)
    except (OSError, ValueError):  # unreadable: decoding will report it
        return ""


def disk_cache_folder(cfg: DataConfig) -> Path | None:
    if cfg.disk_cache == "off":
        return None
    return (cache_home() / "arrays") if cfg.disk_cache == "auto" else Path(cfg.disk_cache).expanduser()


def want_cache(cfg: DataConfig, n_images: int) -> bool:
    if cfg.cache_images != "auto":
        return cfg.cache_images == "yes"
    return n_images * 3 * cfg.image_size**2 <= cfg.cache_limit_gb * 2**30


def write_unreadable(bad: list[tuple[Path, str]], path: Path) -> None:
    write_csv(path, ["path", "error"], ((str(p), err) for p, err in bad))


def guard_leakage(
    splits: dict[str, list[Sample]], decoded: Decoded, row: dict[Path, int], cfg: DataConfig, folder: RunFolder | None
) -> None:
    """Report val/test images also in train, and test images also in val; stop the run if configured to.

    What was compared goes to ``leakage.json`` (for the report) and the log; the duplicates to ``leakage.csv``.
    """
    paths = {split: [s.path for s in samples] for split, samples in splits.items()}
    rows = {split: [row[p] for p in ps] for split, ps in paths.items()}
    leakage = find_overlaps(
        paths, {split: decoded.hashes[r] for split, r in rows.items()},
        {split: decoded.thumbnails[r] for split, r in rows.items()},
        {split: [decoded.digests[i] for i in r] for split, r in rows.items()}, cfg.leakage_max_distance,
    )
    checked = describe(leakage.summary())
    if folder is not None:
        write_json(folder.leakage_summary, leakage.summary())
    overlaps = leakage.overlaps
    if not overlaps:
        log.info(f"Leakage guard: {checked}.")
        return
    where = ""
    if folder is not None:
        write_overlaps(overlaps, folder.leakage)
        where = f"; all are listed in {folder.leakage}"
    first = overlaps[0]
    message = (
        f"{len(overlaps)} val/test image(s) are also in an earlier split, e.g. {first.path} ({first.kind} of "
        f"{first.other_split} image {first.other_path}){where}. Leakage guard: {checked}. Remove the duplicates "
        "so that test measures unseen galaxies"
    )
    if cfg.leakage == "fail":
        raise DataError(message + ", or set data.leakage=warn.")
    log.warning(f"Warning: {message}.")


def _soft_targets(cfg: DataConfig, split: str, samples: list[Sample], classes: list[str]) -> list | None:
    """What a split's images train to, when not their one class: the vote fractions
    (``data.labels.soft``), or with rule redraws the training images' share of re-votes per class
    (validation and test are scored on the one class the rules give)."""
    if cfg.labels.soft:
        return [s.fractions for s in samples]
    if not (cfg.labels.vote_redraws and split == "train"):
        return None
    ruled = sorted({rule.label for rule in parse_rules(cfg.labels.rules)})
    shares = np.array([s.fractions for s in samples])[:, [ruled.index(c) for c in classes]]
    # A class no training galaxy holds is no class to train to; its share goes to the others.
    own = np.eye(len(classes))[[classes.index(s.label) for s in samples]]
    shares = np.where(shares.sum(axis=1, keepdims=True) > 0, shares, own)
    return (shares / shares.sum(axis=1, keepdims=True)).tolist()


def prepare(cfg: DataConfig, folder: RunFolder | None) -> Prepared:
    """Find, decode and split the data; record the split and any unreadable images in ``run_dir``
    (None: write nothing, as in the non-main processes of a multi-process run).

    Unreadable images are dropped before splitting, so they cannot leave a split lopsided.
    """
    ensure_console_logging()
    found = find_samples(cfg)
    questions = found.questions
    everything = [s for split in SPLITS for s in found.get(split, [])]
    decoded, cache_key = decode_cached(cfg, [s.path for s in everything], want_cache(cfg, len(everything)))
    if decoded.bad and folder is not None:
        write_unreadable(decoded.bad, folder.unreadable)
        log.warning(
            f"Skipped {len(decoded.bad)} unreadable image(s), e.g. {decoded.bad[0][0]} "
            f"({decoded.bad[0][1]}); all are listed in {folder.unreadable}."
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
            cfg.fits, _soft_targets(cfg, split, samples, classes),
            [s.counts for s in samples] if questions else None,
        )
    if folder is not None:
        write_splits(splits, folder.splits)
    if cfg.leakage != "off":
        guard_leakage(splits, decoded, row, cfg, folder)
    return Prepared(classes, sets, splits, decoded.bad, questions, cache_key)
