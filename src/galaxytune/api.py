"""The Python API: ``galaxytune.train(config)`` and ``galaxytune.load(run_dir)``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from galaxytune.config import Config, load_config
from galaxytune.inference.predict import Predictor
from galaxytune.training.pipeline import TrainResult
from galaxytune.training.pipeline import train as _train_pipeline


def train(
    config: Config | dict[str, Any] | str | Path, out_dir: str | Path | None = None, overwrite: bool = False
) -> TrainResult:
    """Train with ``config`` (a Config, a nested dict, or a YAML file) into ``out_dir``.

    ``out_dir`` defaults to ``runs/<date-time>``; a folder that already holds a run is replaced
    only with ``overwrite``. The result holds the model, the decision rule, the stage table and
    the run folder.
    """
    if isinstance(config, (str, Path)):
        config = load_config(config)
    elif isinstance(config, dict):
        config = load_config(base=config)
    out = Path(out_dir) if out_dir is not None else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    return _train_pipeline(config, out, overwrite)


def load(run_dir: str | Path) -> Predictor:
    """The saved model of a run, ready for ``.predict(images)``."""
    return Predictor.load(run_dir)
