"""The learning-rate range test before finetuning: Lightning's ``Tuner.lr_find`` sweeps the rate
up over a number of training steps, and the steepest fall of the loss suggests the peak rate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.tuner import Tuner
from torch.utils.data import DataLoader

from galaxytune.config import TrainerConfig
from galaxytune.errors import ConfigError
from galaxytune.training.fit import quiet_lightning
from galaxytune.training.module import ClassifierModule
from galaxytune.training.processes import world

SWEEP_STEPS = 100  # Lightning's default: about 1.4 epochs of gz2 (4,719 images at batch 64)
LOWEST, HIGHEST = 1e-6, 1.0


@dataclass
class LRSweep:
    suggestion: float
    """The rate at the steepest fall of the loss."""
    rates: list[float]
    losses: list[float]
    """The smoothed training loss at each rate of the sweep."""


def find_lr(module: ClassifierModule, train_loader: DataLoader, trainer_cfg: TrainerConfig, workdir: Path
            ) -> LRSweep:
    """Sweep the rate of every parameter group of ``module`` together from 1e-6 up to 1 (or
    until the loss diverges) over ``SWEEP_STEPS`` training steps, and suggest the rate where the
    loss fell fastest. The module's weights (and the random state) are restored afterwards; its
    parameter groups are left changed, so a fresh module must train. ``workdir``: where Lightning
    keeps the weights meanwhile.
    """
    if world()[1] > 1:
        raise ConfigError("finetune.find_lr runs in a single process: find the rate with a one-process run (the "
                          "suggestion is in its stages.json) and set finetune.lr to it for the multi-process run.")
    quiet_lightning()
    trainer = L.Trainer(
        max_epochs=-1, max_steps=SWEEP_STEPS, accelerator=trainer_cfg.accelerator, devices=1,
        precision=trainer_cfg.precision, default_root_dir=workdir, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0, use_distributed_sampler=False,
    )
    result = Tuner(trainer).lr_find(module, train_dataloaders=train_loader, min_lr=LOWEST, max_lr=HIGHEST,
                                    num_training=SWEEP_STEPS, update_attr=False)
    suggestion = result.suggestion() if result is not None else None
    if suggestion is None:
        raise ConfigError(f"finetune.find_lr: the sweep of {SWEEP_STEPS} steps left too few finite losses to suggest a "
                          "rate; set finetune.lr yourself (finetune.find_lr=false).")
    return LRSweep(float(suggestion), list(result.results["lr"]), list(result.results["loss"]))
