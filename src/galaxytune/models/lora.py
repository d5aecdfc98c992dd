"""LoRA adapters (PEFT) for timm backbones, conv nets included.

Targets are chosen by a rule over module types, not by model name: every 1x1 convolution
with groups=1 (the pointwise convs of MobileNets and EfficientNets, the bottleneck projections
of ResNets) and every Linear layer except the classifier (attention and MLP layers of ViTs and
ConvNeXts). Depthwise and other grouped convolutions stay frozen: LoRA on a grouped conv needs
a rank of at least the channel count and saves nothing. The new head trains fully.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from galaxytune.models.backbone import GalaxyClassifier


def head_name(net: GalaxyClassifier) -> str:
    head = net.head
    return next(name for name, module in net.named_modules() if module is head)


def lora_targets(net: GalaxyClassifier) -> list[str]:
    head = head_name(net)
    targets = []
    for name, module in net.named_modules():
        pointwise = isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1
        if pointwise or (isinstance(module, nn.Linear) and name != head):
            targets.append(name)
    return targets


def add_lora(net: GalaxyClassifier, rank: int, alpha: float, dropout: float) -> PeftModel:
    """Wrap ``net`` (in place) with LoRA adapters; only adapters and the head are trainable."""
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout,
        target_modules=lora_targets(net), modules_to_save=[head_name(net)],
    )
    return get_peft_model(net, config)


def save_adapter(model: PeftModel, folder: Path) -> int:
    """Save only the adapters and the head; return their size on disk in bytes."""
    model.save_pretrained(str(folder))
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file())


def merge(model: PeftModel) -> GalaxyClassifier:
    """Fold the adapters into the base weights: a plain network again, for inference and export."""
    return model.merge_and_unload()


def apply_adapter(base: GalaxyClassifier, folder: str | Path) -> GalaxyClassifier:
    """A saved adapter and head (``models/lora_adapter/``) merged into ``base``: the network
    created from the same base weights the run started from. With ``finetune.batchnorm=frozen``
    (the default) this reproduces the run's model exactly; with 'train' the BatchNorm
    statistics the run updated are not in the adapter."""
    return merge(PeftModel.from_pretrained(base, str(folder)))
