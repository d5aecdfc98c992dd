"""The LightningModule that trains a classifier: the head alone on cached features (transfer
stage) or the network on images (finetune stage)."""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from galaxytune.data.transforms import (
    dihedral_targets,
    random_affine,
    random_blur,
    random_brightness,
    random_dihedral,
    random_noise,
    unit_float,
)
from galaxytune.models.freezing import freeze_batchnorm
from galaxytune.training.losses import QUESTION_LOSSES


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def mix_batch(x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Mixup (Zhang et al. 2018): each image blended with another of the batch by a weight
    drawn from Beta(alpha, alpha); the blend, the weight and the partner of each image, whose
    targets the loss mixes by the same weight."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = torch.randperm(len(x), device=x.device)
    x = unit_float(x)
    return lam * x + (1 - lam) * x[partner], lam, partner


def cut_batch(x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, float, torch.Tensor]:
    """CutMix (Yun et al. 2019): a box of each image replaced by the same box of another of the
    batch. The box covers a share 1 - lam of the image, lam drawn from Beta(alpha, alpha), at a
    random centre and clipped at the edges; the returned weight is the share actually kept, so
    that the loss mixes the targets by area. The image, the weight and the partner of each image."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = torch.randperm(len(x), device=x.device)
    h, w = x.shape[-2:]
    cut_h, cut_w = round(h * math.sqrt(1 - lam)), round(w * math.sqrt(1 - lam))
    cy, cx = (int(torch.randint(n, (1,))) for n in (h, w))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
    x = x.clone()
    x[..., top:bottom, left:right] = x[partner, ..., top:bottom, left:right]
    return x, 1 - (bottom - top) * (right - left) / (h * w), partner


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
        sky: dict | None = None,
        brightness: float = 0.0,
        blur: float = 0.0,
        noise: float = 0.0,
        questions: dict | None = None,
        channels_last: bool = False,
        start_size: int = 0,
        start_epochs: int = 0,
        class_weights: torch.Tensor | None = None,
        mixup: float = 0.0,
        cutmix: float = 0.0,
    ):
        """``mirror``: the class each class becomes under a mirror flip (see
        :func:`galaxytune.data.transforms.mirror_permutation`); None: every label is kept.
        ``sky``: arguments of :func:`galaxytune.data.transforms.random_affine` (any-angle turns,
        zoom, shift) applied after the random flip; None: flips and quarter turns only.
        ``brightness``, ``blur``, ``noise``: the largest gain, sigma (pixels) and noise level of
        :func:`~galaxytune.data.transforms.random_brightness`, :func:`~galaxytune.data.transforms.random_blur`
        and :func:`~galaxytune.data.transforms.random_noise`, applied last, in that order; 0: off.
        ``questions``: ``{"slices": ..., "loss": name, "weight": w}`` trains ``net``'s question
        head on every Galaxy Zoo answer's votes beside the class head (items' targets are then
        ``(target, counts)``). ``channels_last``: the faster memory layout for conv nets on CPUs.
        ``start_size``, ``start_epochs``: progressive resizing; the first epochs train on images
        shrunk to ``start_size`` px (cheaper per image), the rest and all validation at full size.
        ``class_weights``: per-class weights of the training loss (rare classes count more); the
        validation loss, which early stopping may follow, stays unweighted. ``mixup``: the alpha
        of the Beta distribution that mixes each training batch with a shuffled copy of itself
        (images, class targets and vote counts alike); 0: off. ``cutmix``: the same alpha for
        CutMix, which pastes a box of the partner instead of blending; with both set, each batch
        takes one of the two at random (as timm's Mixup does)."""
        super().__init__()
        self.net = net
        self.param_groups = param_groups
        self.warmup_fraction = warmup_fraction
        self.augment, self.batchnorm, self.sky = augment, batchnorm, sky
        self.brightness, self.blur, self.noise = brightness, blur, noise
        self.questions, self.channels_last = questions, channels_last
        self.start_size, self.start_epochs = start_size, start_epochs
        self.mixers = [(mix, alpha) for mix, alpha in ((mix_batch, mixup), (cut_batch, cutmix)) if alpha > 0]
        self.loss = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)
        self.val_loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
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
        # Validation is scored by torchmetrics: under DDP each process sums over its share of the
        # images (unpadded, see galaxytune.training.sharding) and compute() adds up the processes'
        # sums, so the epoch's metrics and mean loss are those of a single process on all images.
        self.val_metrics = metrics.clone(prefix="val_")
        self.val_mean_loss = MeanMetric()

    def on_train_batch_start(self, batch, batch_idx):
        # Lightning sets each submodule's train/eval flag itself (around validation, at fit
        # start), so the BatchNorm policy is applied before every step, not in train().
        freeze_batchnorm(self.net, self.batchnorm)

    def on_fit_start(self):
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def on_fit_end(self):
        # Saved weights must be contiguous (safetensors), whatever layout trained them.
        self.net.to(memory_format=torch.contiguous_format)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # A resumed fit then draws the same shuffles and augmentations as an uninterrupted one.
        checkpoint["torch_rng"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "torch_rng" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng"])

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._layout(x))

    def augment_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random rotations and flips, with the targets of mirrored images permuted to match;
        then, with ``sky``, any-angle turns, zoom and shift; then brightening, blur, then noise (as
        a telescope adds them: the source's flux, the seeing that blurs it, the detector's noise on
        top)."""
        x, which = random_dihedral(x)
        if self.sky:
            x = random_affine(x, **self.sky)
        if self.brightness:
            x = random_brightness(x, self.brightness)
        if self.blur:
            x = random_blur(x, self.blur)
        if self.noise:
            x = random_noise(x, self.noise)
        return x, dihedral_targets(y, which, self.mirror)

    def training_step(self, batch, batch_idx):
        x, y = batch
        counts = None
        if isinstance(y, (list, tuple)):
            y, counts = y
        if self.start_size and self.current_epoch < self.start_epochs:
            x = F.interpolate(unit_float(x), size=self.start_size,
                              mode="bilinear", antialias=True)
        if self.augment:
            x, y = self.augment_batch(x, y)
        lam, partner = 1.0, None
        if self.mixers:
            mix, alpha = self.mixers[int(torch.randint(len(self.mixers), (1,)))]
            x, lam, partner = mix(x, alpha)
            counts = None if counts is None else lam * counts + (1 - lam) * counts[partner]
        question_term = 0.0
        if self.questions and counts is not None:
            logits, answers = self.net.forward_with_questions(self._layout(x))
            question_loss = QUESTION_LOSSES[self.questions["loss"]](answers, counts, self.questions["slices"])
            self.log("train_question_loss", question_loss, on_step=False, on_epoch=True, batch_size=len(y))
            question_term = self.questions["weight"] * question_loss
        else:
            logits = self(x)
        class_loss = self.loss(logits, y)
        if partner is not None:
            class_loss = lam * class_loss + (1 - lam) * self.loss(logits, y[partner])
        loss = class_loss + question_term
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log("lr", self.optimizers().param_groups[-1]["lr"], on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        if isinstance(y, (list, tuple)):
            y = y[0]
        logits = self(x)
        self.val_mean_loss.update(self.val_loss(logits, y), weight=len(y))
        # Soft targets (vote fractions) are scored as classes by their most-voted answer.
        self.val_metrics.update(logits, y.argmax(dim=1) if y.is_floating_point() else y)

    def on_validation_epoch_end(self):
        self.log("val_loss", self.val_mean_loss.compute(), prog_bar=True)
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_mean_loss.reset()
        self.val_metrics.reset()

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.param_groups)
        # The steps this process will take: per-process batches under DDP, last batch dropped.
        total = int(self.trainer.estimated_stepping_batches)
        warmup = round(self.warmup_fraction * total)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
