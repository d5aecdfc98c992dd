"""The finetune methods: one registry, declared once, that the config (``finetune.method``: its
choices and help), ``galaxytune config``, the README's table and the finetune stage all read.

Each method says which backbone parameters train (a rule over one parameter's place in the
network) and how its optimizer groups are built. Light on purpose (no torch at import): the
config imports the names from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    """Where one backbone parameter sits: what a method's rule decides on."""

    name: str
    layer: int
    """Its timm layer group, counted from the stem (0); the head's is ``top``."""
    top: int
    is_norm: bool
    """A normalisation layer's weight or bias."""


@dataclass(frozen=True)
class FinetuneMethod:
    name: str
    short: str
    """What trains, in a few words (``finetune.method``'s help)."""
    trains: str
    """What trains, in words (the config's help and the README's table)."""
    notes: str = ""
    """The README table's notes column."""
    rule: Callable[[Param, int], bool] | None = None
    """Whether a backbone parameter trains, given ``finetune.top_blocks``; None: not by a rule."""
    adapters: bool = False
    """LoRA: the network is wrapped with adapters, which train with the head."""
    question_head: bool = True
    """Whether the Galaxy Zoo question head can train beside it."""

    @property
    def runs_stage(self) -> bool:
        """Whether stage 2 trains anything with this method ('head': stage 1 alone)."""
        return self.rule is not None or self.adapters


METHODS: dict[str, FinetuneMethod] = {m.name: m for m in (
    FinetuneMethod(
        "full", short="every layer",
        trains="every parameter, LR decayed by `finetune.layer_decay` per timm layer group downwards",
        notes="the best validation accuracy on gz2 and gz1 in the benchmark, at under twice top-blocks' time per "
              "epoch",
        rule=lambda p, top_blocks: True),
    FinetuneMethod(
        "top-blocks", short="the top finetune.top_blocks layer groups",
        trains="the head and the top `finetune.top_blocks` timm layer groups, with the same decay",
        notes="the cheapest finetune per epoch; works for any timm model through its layer-group metadata",
        rule=lambda p, top_blocks: p.layer >= p.top - top_blocks),
    FinetuneMethod(
        "lora", short="LoRA adapters and the head",
        trains="PEFT LoRA adapters (`lora_rank`, `lora_alpha`, `lora_dropout`) on every 1x1 convolution with "
               "groups=1 and every Linear layer but the head; the head trains fully",
        notes="depthwise convolutions stay frozen (LoRA on a grouped conv saves nothing); the run saves "
              "`models/lora_adapter/` (adapter + head, its size printed and in `stages.json`; "
              "`galaxytune.models.lora.apply_adapter(base, folder)` merges it into the base weights) and, so that "
              "the run folder predicts and exports on its own, the merged model",
        adapters=True, question_head=False),
    FinetuneMethod(
        "bias-norm", short="biases, norms and the head",
        trains="the head, every bias and every normalisation layer", notes="the cheapest to store",
        rule=lambda p, top_blocks: p.layer == p.top or p.name.endswith("bias") or p.is_norm),
    FinetuneMethod("head", short="transfer stage only", trains="nothing: stage 1 only"),
)}
"""Every finetune method by name, in the order the config and the docs list them."""

FINETUNE_METHODS = tuple(METHODS)
DEFAULT_METHOD = "full"


def method(name: str) -> FinetuneMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown finetune method '{name}'; choose from {', '.join(METHODS)}") from None


def methods_help() -> str:
    """``finetune.method``'s one line of help."""
    return "What trains: " + ", ".join(f"'{m.name}' ({m.short})" for m in METHODS.values()) + "."


def methods_table() -> str:
    """The README's table of the methods (a test keeps the README's copy the same)."""
    rows = ["| method | trains | notes |", "| --- | --- | --- |"]
    for m in METHODS.values():
        name = f"`{m.name}`" + (" (default)" if m.name == DEFAULT_METHOD else "")
        rows.append(f"| {name} | {m.trains} | {m.notes} |".replace("|  |", "| |"))
    return "\n".join(rows)
