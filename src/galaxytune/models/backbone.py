"""Create a timm backbone with a new head, from hub weights, a local file, or none.

The network takes images scaled to [0, 1] (or uint8) and normalises them itself, with the
mean and std that its weights expect, so that every caller (training, prediction, ONNX) feeds
the same thing and normalisation cannot be forgotten or applied twice.
"""

from __future__ import annotations

import difflib
import math
import pickle
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from galaxytune.errors import ModelError


def stretch_pixels(x: torch.Tensor, stretch: str, softening: float) -> torch.Tensor:
    """Pixel values x in [0, 1] as the network takes them in (``data.stretch``): 'asinh' maps x
    to asinh(x / softening) / asinh(1 / softening), lifting faint emission (radio lobes, outer
    discs) out of the bottom few grey levels; 'none' leaves them linear."""
    if stretch == "asinh":
        return torch.asinh(x / softening) / math.asinh(1.0 / softening)
    return x


class GalaxyClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, mean: list[float], std: list[float], stretch: str = "none",
                 softening: float = 0.05):
        """``stretch``, ``softening``: the stretch of pixel values before normalising (:func:`stretch_pixels`)."""
        super().__init__()
        self.backbone = backbone
        self.stretch, self.softening = stretch, softening
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.question_head: nn.Linear | None = None
        """Training-time second head on the same features: every Galaxy Zoo answer's votes
        (galaxytune.data.questions). Not part of the saved model: it only shapes the features."""

    def add_question_head(self, n_answers: int) -> None:
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.question_head = nn.Linear(width, n_answers)

    def drop_question_head(self) -> None:
        self.question_head = None

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return (stretch_pixels(x, self.stretch, self.softening) - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features: the head's input."""
        fmap = self.backbone.forward_features(self.normalise(x))
        return self.backbone.forward_head(fmap, pre_logits=True)

    @property
    def head(self) -> nn.Module:
        return self.backbone.get_classifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalise(x))

    def forward_with_questions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits and, from the question head, one logit per Galaxy Zoo answer."""
        fmap = self.backbone.forward_features(self.normalise(x))
        pooled = self.backbone.forward_head(fmap, pre_logits=True)
        return self.backbone.forward_head(fmap), self.question_head(pooled)


UNREADABLE_WEIGHTS: tuple[type[BaseException], ...] = (RuntimeError, ValueError, KeyError, EOFError,
                                                     pickle.UnpicklingError)
"""What loading weights that do not fit the model raises: a shape mismatch or missing keys
(RuntimeError, KeyError), a corrupt or truncated file (UnpicklingError, EOFError, ValueError)."""


def _safetensors_error() -> type[BaseException]:
    """What safetensors raises on a file that is not one (its own class, not an OSError)."""
    from safetensors import SafetensorError

    return SafetensorError


def _unknown_model(name: str) -> ModelError:
    close = difflib.get_close_matches(name, timm.list_models(), n=3)
    hint = f" Close names: {', '.join(close)}." if close else " See timm.list_models()."
    return ModelError(f"timm has no model named '{name}'.{hint}")


def create_classifier(
    name: str,
    num_classes: int,
    weights: str = "hub",
    mean: list[float] | None = None,
    std: list[float] | None = None,
    drop_rate: float = 0.0,
    kwargs: dict[str, Any] | None = None,
    stretch: str = "none",
    softening: float = 0.05,
) -> GalaxyClassifier:
    """A :class:`GalaxyClassifier` for ``num_classes`` on timm model ``name``.

    ``weights``: 'hub' downloads timm's default pretrained weights; 'none' starts from random
    weights; anything else is a local safetensors file or a (possibly nested) state dict,
    whose classifier is dropped and replaced by a new head.
    """
    if not timm.is_model(name):
        raise _unknown_model(name)
    options: dict[str, Any] = dict(kwargs or {}, num_classes=num_classes, drop_rate=drop_rate)
    if weights not in ("hub", "none"):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelError(f"Weights file {path} does not exist.")
        options["pretrained_cfg_overlay"] = dict(file=str(path))
    try:
        backbone = timm.create_model(name, pretrained=weights != "none", **options)
    except TypeError as exc:  # an argument the architecture does not take
        raise ModelError(f"timm model {name} rejects model.kwargs={kwargs}: {exc}") from None
    except OSError as exc:  # no network, hub unreachable
        raise ModelError(
            f"Could not download {name} weights from timm's hub ({exc}). "
            "Offline? Pass a local file with --weights PATH."
        ) from None
    except (*UNREADABLE_WEIGHTS, _safetensors_error()) as exc:
        source = "timm's hub" if weights == "hub" else weights
        raise ModelError(
            f"Could not load pretrained weights for {name} from {source}: {type(exc).__name__}: {exc}\n"
            "Offline? Pass a local file with --weights PATH (safetensors or a state dict), "
            "or model.weights=none to start from random weights."
        ) from exc
    head = backbone.get_classifier()
    if isinstance(head, nn.Linear):
        # A new head starts at zero: every class equally likely, so the first steps neither
        # blow up the loss (timm's default init gives logits with std ~5 here) nor push
        # large random gradients into pretrained blocks.
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    cfg = backbone.pretrained_cfg
    mean = list(mean or cfg.get("mean", (0.485, 0.456, 0.406)))
    std = list(std or cfg.get("std", (0.229, 0.224, 0.225)))
    return GalaxyClassifier(backbone, mean, std, stretch, softening)
