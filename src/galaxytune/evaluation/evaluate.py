"""Score a saved model on any labelled set."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from galaxytune.config import DataConfig, LabelsConfig, load_config
from galaxytune.console import ensure_console_logging
from galaxytune.data.csv_table import read_header
from galaxytune.data.formats import VOTELESS_FORMATS, detect_format, find_samples
from galaxytune.data.samples import SPLITS, Sample
from galaxytune.data.vote_labels import label_columns
from galaxytune.errors import DataError
from galaxytune.evaluation.metrics import classification_metrics
from galaxytune.inference.predict import Predictions, Predictor
from galaxytune.run_folder import RunFolder

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    metrics: dict
    y_true: np.ndarray
    predictions: Predictions


def run_splits(run_dir: Path, data: str) -> dict[str, list[Sample]] | None:
    """The splits a run used, when ``data`` is the data that run was trained on."""
    folder = RunFolder(run_dir)
    if not folder.splits.is_file() or not folder.config.is_file():
        return None
    trained_on = yaml.safe_load(folder.config.read_text())["data"]["path"]
    if Path(trained_on).expanduser().resolve() != Path(data).expanduser().resolve():
        return None
    return folder.read_splits()


def data_config(data: str, run_dir: Path | None, path_column: str | None, label_column: str | None) -> DataConfig:
    """How to read ``data``: as the run read its own data (vote rules, FITS bands and stretch)
    where that fits, with the format detected afresh and the columns given here taking precedence.

    The run's label rules are kept only for a vote table that has the columns they read: a
    labelled image folder, a CSV with a label column, or an explicit ``label_column`` means
    the labels are already there.
    """
    config = RunFolder(run_dir).config if run_dir is not None else None
    cfg = load_config(config).data if config is not None and config.is_file() else DataConfig()
    root = Path(data).expanduser()
    cfg.path = str(data)
    cfg.format = "fits" if cfg.format == "fits" else "auto"  # FITS folders look like image folders
    cfg.path_column = path_column or cfg.path_column
    cfg.label_column = label_column or cfg.label_column
    if label_column or not root.exists() or not _has_vote_columns(root, cfg.labels):
        cfg.labels = LabelsConfig()
    return cfg


def _has_vote_columns(root: Path, labels: LabelsConfig) -> bool:
    if not label_columns(labels):
        return False
    fmt = detect_format(root)
    if fmt in VOTELESS_FORMATS:
        return False
    if fmt == "csv":  # other tables are read by their format's reader, which names what it lacks
        return set(label_columns(labels)) <= set(read_header(root))
    return True


def evaluate(
    predictor: Predictor, data: str, split: str | None = None, path_column: str | None = None,
    label_column: str | None = None, tta: bool | None = None, run_dir: Path | None = None,
) -> Evaluation:
    """Metrics of ``predictor`` on the labelled set ``data``.

    On the data its run (``run_dir``) was trained on, the splits are the run's own
    (``splits.csv``) and ``split`` defaults to its test split: carved val/test splits exist
    only there, and scoring training images would flatter the model. Elsewhere ``split``
    defaults to every labelled image found, read as the run read its own data (same format and
    label rules; see :func:`data_config`). ``tta``: see :meth:`Predictor.logits` (None: as the
    model expects).
    """
    ensure_console_logging()
    found = run_splits(run_dir, data) if run_dir is not None else None
    if found is not None:
        split = split or "test"
        log.info(f"{data} is the run's own data: using its {split} split from splits.csv.")
        if split in ("all", "train", "val"):
            some = "some of " if split == "all" else ""
            log.warning(f"Warning: the model was trained or tuned on {some}these images.")
    else:
        found = find_samples(data_config(data, run_dir, path_column, label_column))
        split = split or "all"
    wanted = SPLITS if split == "all" else (split,)
    samples = [s for name in wanted for s in found.get(name, [])]
    if not samples:
        raise DataError(f"{data} has no '{split}' split (found: {', '.join(found)}).")
    unknown = sorted({s.label for s in samples} - set(predictor.classes))
    if unknown:
        raise DataError(
            f"{data} has class(es) {', '.join(unknown)} that the model does not know "
            f"(it knows {', '.join(predictor.classes)})."
        )
    if predictor.info.tta and not predictor.uses_tta(tta):
        log.warning("Warning: this model's decision rule was fitted on TTA logits; scoring without TTA.")
    label_of = {s.path: s.label for s in samples}
    predictions = predictor.predict([s.path for s in samples], tta=tta)
    if predictions.unreadable and not predictions.paths:
        path, reason = predictions.unreadable[0]
        raise DataError(f"{data}: none of its {len(samples)} image(s) could be read, e.g. {path} ({reason}). "
                        "Check that the files are images.")
    if predictions.unreadable:
        log.warning(f"Skipped {len(predictions.unreadable)} unreadable image(s), e.g. {predictions.unreadable[0][0]}.")
    index = {c: i for i, c in enumerate(predictor.classes)}
    y_true = np.array([index[label_of[p]] for p in predictions.paths])
    return Evaluation(classification_metrics(y_true, predictions.probabilities), y_true, predictions)
