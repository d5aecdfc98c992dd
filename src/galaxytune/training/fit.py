"""Run one Lightning fit with early stopping and an atomically written best checkpoint."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, WeightAveraging
from torch.utils.data import DataLoader

from galaxytune.config import TrainerConfig
from galaxytune.console import ensure_console_logging
from galaxytune.errors import ConfigError
from galaxytune.files import atomic_path
from galaxytune.run_folder import RunFolder
from galaxytune.training.loggers import finish_loggers, make_loggers
from galaxytune.training.processes import is_main_process
from galaxytune.training.progress import progress_callbacks


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file first, then are renamed into place."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        with atomic_path(Path(path)) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


@dataclass
class FitStats:
    epochs: int
    """Epochs run (early stopping may end a stage before its maximum)."""
    seconds: float
    """Wall time of the fit: training and the per-epoch validation passes."""


def quiet_lightning() -> None:
    """Keep the console to progress bars and our own messages."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*isn't divisible.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*exists and is not empty.*")
    # Validation metrics are torchmetrics, summed over the processes when computed (ClassifierModule).
    warnings.filterwarnings("ignore", message=r".*sync_dist=True.*")
    # The learning-rate sweep (training.lr_finder) trains without validating.
    warnings.filterwarnings("ignore", message=r".*`validation_step` but have no `val_dataloader`.*")
    # Frozen BatchNorm layers are in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")


class RunState(Callback):
    """Records in the run folder's state which epoch of which stage the run has finished."""

    def __init__(self, folder: RunFolder, stage: str, epochs: int):
        self.folder, self.stage, self.epochs = folder, stage, epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.folder.update_state(stage=self.stage, epoch=trainer.current_epoch + 1, epochs=self.epochs)


class EarlyStoppingFrom(EarlyStopping):
    """Early stopping that starts counting at epoch ``first_epoch`` (0-based). Progressive
    resizing's shrunk epochs score low at full-size validation; counted, they can use up the
    patience before the first full-size epoch (on gz2 they did, docs/benchmarks.md)."""

    def __init__(self, first_epoch: int, **kwargs):
        super().__init__(**kwargs)
        self.first_epoch = first_epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch >= self.first_epoch:
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch >= self.first_epoch:
            super().on_validation_end(trainer, pl_module)


def fit(
    module: L.LightningModule,
    train_loader: DataLoader,
    val_loader: DataLoader,
    folder: RunFolder,
    stage: str,
    epochs: int,
    patience: int,
    trainer_cfg: TrainerConfig,
    resume: bool = False,
    ema_epochs: float = 0.0,
    patience_from: int = 0,
) -> FitStats:
    """Train ``module`` and load its best weights (by the validation metric) back into it.

    After every epoch the full training state is saved, so that ``resume`` continues an
    interrupted fit from its last finished epoch (optimizer, schedule and early stopping included).
    ``ema_epochs`` > 0: validation, early stopping and the best checkpoint see a moving average of
    the weights over about that many epochs, and the average is what the module keeps.
    ``patience_from``: the first epoch (0-based) that early stopping counts.
    """
    quiet_lightning()
    ensure_console_logging()
    monitor = f"val_{trainer_cfg.monitor}"
    mode = "min" if trainer_cfg.monitor == "loss" else "max"
    best = folder.best_checkpoint(stage)
    averaging = _weight_averaging(ema_epochs, train_loader)
    # The averaging callback puts the average into a checkpoint's weights only in a full checkpoint.
    checkpoint = ModelCheckpoint(
        dirpath=best.parent, filename=best.stem, monitor=monitor, mode=mode,
        save_top_k=1, save_weights_only=not averaging, enable_version_counter=False,
    )
    last = folder.last_checkpoint(stage)
    latest = ModelCheckpoint(dirpath=last.parent, filename=last.stem, save_top_k=1, enable_version_counter=False)
    bar, progress = progress_callbacks(trainer_cfg, stage, monitor, mode, patience)
    callbacks = [checkpoint, latest, EarlyStoppingFrom(patience_from, monitor=monitor, mode=mode, patience=patience),
                 RunState(folder, stage, epochs), *progress, *averaging]
    resume_from = last if resume and last.is_file() else None
    if resume_from is not None and is_main_process():
        folder.set_aside_epoch_log(stage)
    try:
        trainer = _trainer(trainer_cfg, callbacks, bar, epochs, folder, stage)
    except (MisconfigurationException, ValueError) as exc:  # a RuntimeError is no settings problem: it goes on up
        raise ConfigError(
            f"Lightning rejects the trainer settings (accelerator={trainer_cfg.accelerator}, "
            f"devices={trainer_cfg.devices}, strategy={trainer_cfg.strategy}, precision={trainer_cfg.precision}): {exc}"
        ) from exc
    start = time.perf_counter()
    try:
        trainer.fit(module, train_loader, val_loader, ckpt_path=resume_from)
    finally:
        finish_loggers(trainer.loggers)
    seconds = time.perf_counter() - start
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    return FitStats(trainer.current_epoch, seconds)


class EpochEMA(WeightAveraging):
    """An exponential moving average of the weights over about ``epochs`` epochs: its decay is set
    when the fit starts, from this process's batches per epoch (fewer under DDP), so that one
    setting suits 1,500 images and 150,000."""

    def __init__(self, epochs: float, train_loader: DataLoader):
        super().__init__(avg_fn=self._average)
        self.epochs, self.train_loader, self.decay = epochs, train_loader, 0.0

    def setup(self, trainer, pl_module, stage) -> None:
        self.decay = 1 - 1 / max(1.0, self.epochs * len(self.train_loader))  # the processes exist by now
        super().setup(trainer, pl_module, stage)

    def _average(self, average: torch.Tensor, current: torch.Tensor, n_averaged) -> torch.Tensor:
        return self.decay * average + (1 - self.decay) * current


def _weight_averaging(ema_epochs: float, train_loader: DataLoader) -> list[Callback]:
    """The EMA callback (as a list: none when off)."""
    return [EpochEMA(ema_epochs, train_loader)] if ema_epochs > 0 else []


def _trainer(trainer_cfg: TrainerConfig, callbacks: list[Callback], bar: bool, epochs: int, folder: RunFolder,
             stage: str) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        accelerator=trainer_cfg.accelerator,
        devices=trainer_cfg.devices,
        strategy=trainer_cfg.strategy,
        num_nodes=trainer_cfg.num_nodes,
        precision=trainer_cfg.precision,
        callbacks=callbacks,
        logger=make_loggers(trainer_cfg, folder, stage),
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=bar,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        deterministic=False,
        use_distributed_sampler=False,  # the loaders shard themselves (galaxytune.training.sharding)
    )
