"""The LightningModule that trains a classifier: the head alone on cached features (transfer
stage) or the network on images (finetune stage)."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from galaxytune.data.transforms import dihedral_targets, random_dihedral
from galaxytune.models.freezing import freeze_batchnorm


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class ClassifierModule(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        param_groups: list[dict],
        warmup_fraction: float = 0.0,
        label_smoothing: float = 0.0,
        augment: bool = False,
        batchnorm: str = "frozen",
        mirror: list[int] | None = None,
    ):
        """``mirror``: the class each class becomes under a mirror flip (see
        :func:`galaxytune.data.transforms.mirror_permutation`); None: every label is kept."""
        super().__init__()
        self.net = net
        self.param_groups = param_groups
        self.warmup_fraction = warmup_fraction
        self.augment, self.batchnorm = augment, batchnorm
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # A buffer, so that it follows the module to the device; not saved in checkpoints.
        perm = torch.arange(num_classes) if mirror is None else torch.tensor(mirror)
        self.register_buffer("mirror", perm, persistent=False)
        metrics = MetricCollection(
            {
                "accuracy": MulticlassAccuracy(num_classes, average="micro"),
                "balanced_accuracy": MulticlassRecall(num_classes, average="macro"),
                "macro_f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val_")

    def on_train_batch_start(self, batch, batch_idx):
        # Lightning sets each submodule's train/eval flag itself (around validation, at fit
        # start), so the BatchNorm policy is applied before every step, not in train().
        freeze_batchnorm(self.net, self.batchnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def augment_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random rotations and flips, with the targets of mirrored images permuted to match."""
        x, which = random_dihedral(x)
        return x, dihedral_targets(y, which, self.mirror)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.augment:
            x, y = self.augment_batch(x, y)
        loss = self.loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log("lr", self.optimizers().param_groups[-1]["lr"], on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", self.loss(logits, y), on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        # Soft targets (vote fractions) are scored as classes by their most-voted answer.
        self.val_metrics.update(logits, y.argmax(dim=1) if y.is_floating_point() else y)

    def on_validation_epoch_end(self):
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.param_groups)
        # The steps this process will take: per-process batches under DDP, last batch dropped.
        total = int(self.trainer.estimated_stepping_batches)
        warmup = round(self.warmup_fraction * total)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
