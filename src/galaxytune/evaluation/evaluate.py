"""Score a saved model on any labelled set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from galaxytune.data.sources import SPLITS, find_labelled
from galaxytune.errors import DataError
from galaxytune.evaluation.metrics import classification_metrics
from galaxytune.inference.predict import Predictions, Predictor


@dataclass
class Evaluation:
    metrics: dict
    y_true: np.ndarray
    predictions: Predictions


def evaluate(
    predictor: Predictor, data: str, split: str = "all", path_column: str = "filename",
    label_column: str = "label", tta: bool = False,
) -> Evaluation:
    found = find_labelled(data, path_column, label_column)
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
    label_of = {s.path: s.label for s in samples}
    predictions = predictor.predict([s.path for s in samples], tta=tta)
    if predictions.unreadable:
        print(f"Skipped {len(predictions.unreadable)} unreadable image(s), e.g. {predictions.unreadable[0][0]}.")
    index = {c: i for i, c in enumerate(predictor.classes)}
    y_true = np.array([index[label_of[p]] for p in predictions.paths])
    return Evaluation(classification_metrics(y_true, predictions.probabilities), y_true, predictions)
