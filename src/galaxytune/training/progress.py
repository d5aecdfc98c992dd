"""Training progress a user can follow anywhere: a progress bar on a terminal, else one plain
line per epoch (stage, epoch k/N, train loss, the validation metrics, seconds, time left).

Under multi-process training only the main process writes the lines.
"""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import Callback

from galaxytune.config import TrainerConfig
from galaxytune.console import duration, interactive, logger

# The module's per-epoch values (training/module.py), in the order the lines show them; any other
# value logged as val_* follows.
SHOWN = ("train_loss", "train_question_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1")


def progress_callbacks(
    trainer_cfg: TrainerConfig, stage: str, monitor: str, mode: str, patience: int
) -> tuple[bool, list[Callback]]:
    """Whether Lightning shows its progress bar (on a terminal, with ``trainer.progress``), and
    the callbacks that write the plain lines where it does not (unless ``trainer.epoch_lines`` is off)."""
    bar = trainer_cfg.progress and interactive()
    lines = trainer_cfg.epoch_lines and not bar
    return bar, [EpochLines(stage, monitor, mode, patience)] if lines else []


class EpochLines(Callback):
    """Logs, on the ``galaxytune`` logger, what a stage is about to do, one line per epoch with
    an estimate of the time the stage has left (epochs left x mean epoch time so far), the
    stage's estimated duration after its first epoch, and how it ended."""

    def __init__(self, stage: str, monitor: str, mode: str, patience: int):
        self.stage, self.monitor, self.mode, self.patience = stage, monitor, mode, patience
        self.times: list[float] = []
        self.started = self.epoch_started = 0.0
        self.best: tuple[int, float] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times, self.best, self.started = [], None, time.perf_counter()
        if trainer.is_global_zero:
            logger.info(f"{self.stage}: up to {_count(trainer.max_epochs, 'epoch')} of "
                        f"{_count(trainer.num_training_batches, 'batch')}; stops early after {self.patience} "
                        f"without a better {self.monitor}")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning runs the epoch's validation before this hook: its metrics are in.
        seconds = time.perf_counter() - self.epoch_started
        self.times.append(seconds)
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        self._track_best(epoch, values.get(self.monitor))
        if not trainer.is_global_zero:
            return
        names = [n for n in SHOWN if n in values] + sorted(
            n for n in values if n.startswith("val_") and n not in SHOWN)
        mean = sum(self.times) / len(self.times)
        fields = [f"{self.stage} epoch {epoch}/{total}", *(f"{n} {values[n]:.4f}" for n in names),
                  duration(seconds), f"eta {duration((total - epoch) * mean)}"]
        logger.info("  ".join(fields))
        if len(self.times) == 1 and epoch < total:  # the stage's first epoch (of this process, if resumed)
            left = total - epoch + 1
            logger.info(f"{self.stage}: about {duration(left * seconds)} for {left} epochs at {duration(seconds)} "
                        "each (less if it stops early)")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.times:
            return
        done, total = len(self.times), trainer.max_epochs
        ran = trainer.current_epoch  # epochs completed, counting any run before a resume
        how = f"stopped early after {ran} of {total} epochs" if ran < total else _count(ran, "epoch")
        best = f"; best {self.monitor} {self.best[1]:.4f} at epoch {self.best[0]}" if self.best else ""
        logger.info(f"{self.stage}: {how} in {duration(time.perf_counter() - self.started)} "
                    f"({duration(sum(self.times) / done)} each){best}")

    def _track_best(self, epoch: int, value: float | None) -> None:
        if value is None:
            return
        if self.best is None or (value < self.best[1] if self.mode == "min" else value > self.best[1]):
            self.best = (epoch, value)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {'batches' if noun == 'batch' else noun + 's'}"
