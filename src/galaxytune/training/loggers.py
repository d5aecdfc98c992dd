"""Where training curves go (``trainer.logger``): Lightning's CSV logs always, since the run's
``metrics.csv`` and report are made from them, plus TensorBoard or Weights & Biases on request."""

from __future__ import annotations

import importlib.util
import os

from galaxytune.config import TrainerConfig
from galaxytune.errors import ConfigError
from galaxytune.run_folder import RunFolder

# trainer.logger -> (modules that provide it, the pip extra that installs one)
PACKAGES = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"), "wandb": (("wandb",), "wandb")}


def check_logger(trainer_cfg: TrainerConfig) -> None:
    """One clear error, before any training, when the chosen logger's package is not installed."""
    modules, extra = PACKAGES.get(trainer_cfg.logger, ((), ""))
    if modules and not any(importlib.util.find_spec(m) is not None for m in modules):
        raise ConfigError(f"trainer.logger={trainer_cfg.logger} needs the {modules[0]} package, which is not "
                          f"installed: pip install 'galaxytune[{extra}]' (or trainer.logger=csv).")


def make_loggers(trainer_cfg: TrainerConfig, folder: RunFolder, stage: str) -> list:
    """The Lightning loggers of one stage: ``logs/<stage>/metrics.csv``, and with
    ``trainer.logger=tensorboard`` event files in ``logs/tensorboard/<stage>/``; with ``wandb`` a
    run named after the run folder and stage, offline (in ``logs/wandb/``) unless the environment
    sets ``WANDB_MODE``."""
    from lightning.pytorch.loggers import CSVLogger

    check_logger(trainer_cfg)
    loggers = [CSVLogger(folder.logs, name=stage, version="")]
    if trainer_cfg.logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(folder.logs / "tensorboard", name=stage, version="",
                                         default_hp_metric=False))
    elif trainer_cfg.logger == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(
            name=f"{folder.path.name}-{stage}", save_dir=str(folder.logs), offline="WANDB_MODE" not in os.environ,
            project=os.environ.get("WANDB_PROJECT", "galaxytune"), group=folder.path.name, job_type=stage,
        ))
    return loggers


def finish_loggers(loggers: list) -> None:
    """End a stage's W&B run, so that the next stage starts its own instead of writing into it."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger" and getattr(logger, "_experiment", None) is not None:
            logger.experiment.finish()
