"""Which parameters train in the finetune stage, and at which learning rate.

Layers are timm's own layer groups (``group_matcher``), numbered from the stem (0) to the
head (last), so "the top N blocks" means the same thing for every timm architecture.
"""

from __future__ import annotations

from timm.models import group_parameters
from timm.optim import param_groups_layer_decay
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from galaxytune.models.backbone import GalaxyClassifier
from galaxytune.models.methods import Param
from galaxytune.models.methods import method as finetune_method

NORMS = (_BatchNorm, nn.LayerNorm, nn.GroupNorm)


def layer_ids(model: GalaxyClassifier) -> dict[str, int]:
    """Parameter name (inside the backbone) -> timm layer index, head = highest."""
    backbone = model.backbone
    if hasattr(backbone, "group_matcher"):
        return group_parameters(backbone, backbone.group_matcher(coarse=False), reverse=True)
    # No layer groups: every parameter is one layer, in definition order.
    return {name: i for i, (name, _) in enumerate(backbone.named_parameters())}


def set_trainable(model: GalaxyClassifier, method: str, top_blocks: int) -> int:
    """Freeze all but what ``method`` (a name in :data:`galaxytune.models.methods.METHODS` with a
    rule) trains; return the number of trainable parameters. 'full' trains everything;
    'top-blocks' the head layer plus the ``top_blocks`` layers under it; 'bias-norm' the head,
    every bias and every normalisation layer's parameters.
    """
    rule = finetune_method(method).rule
    if rule is None:
        raise ValueError(f"finetune method '{method}' does not choose parameters by a rule")
    ids = layer_ids(model)
    top = max(ids.values())
    norms = {f"{n}.{p}" for n, m in model.backbone.named_modules() if isinstance(m, NORMS) for p, _ in
             m.named_parameters(recurse=False)}
    for name, param in model.backbone.named_parameters():
        param.requires_grad = rule(Param(name, ids.get(name, top), top, name in norms), top_blocks)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def optimizer_groups(model: GalaxyClassifier, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW parameter groups of the trainable parameters with layer-wise LR decay.

    Biases and normalisation weights get no weight decay.
    """
    groups = param_groups_layer_decay(model.backbone, weight_decay=weight_decay, layer_decay=layer_decay)
    for group in groups:
        group["lr"] = lr * group.pop("lr_scale")
    return [g for g in groups if g["params"]]


def freeze_batchnorm(model: nn.Module, policy: str) -> None:
    """Put BatchNorm layers in eval mode where their statistics must not move.

    With policy 'frozen' that is every BatchNorm layer; with 'train' only those whose
    parameters are frozen (a frozen block must stay exactly the function it was).
    """
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            frozen = not any(p.requires_grad for p in module.parameters(recurse=False))
            if policy == "frozen" or frozen:
                module.eval()


def prepare_finetune(net: GalaxyClassifier, fc) -> tuple[nn.Module, list[dict]]:
    """The module that ``fc.method`` trains (``net``, or ``net`` wrapped with LoRA adapters: in
    place, so pass a copy to keep the original) and its AdamW parameter groups, from ``fc``
    (FinetuneConfig)."""
    chosen = finetune_method(fc.method)
    if chosen.adapters:
        from galaxytune.models.lora import add_lora

        trained = add_lora(net, fc.lora_rank, fc.lora_alpha, fc.lora_dropout)
        return trained, [{"params": [p for p in trained.parameters() if p.requires_grad], "lr": fc.lr,
                          "weight_decay": fc.weight_decay}]
    if chosen.rule is None:
        raise ValueError(f"finetune method '{chosen.name}' trains nothing in stage 2")
    set_trainable(net, chosen.name, fc.top_blocks)
    return net, optimizer_groups(net, fc.lr, fc.weight_decay, fc.layer_decay)
