"""The saved model of a run: ``models/model.safetensors`` plus ``models/model.json``.

The JSON holds everything needed to use the weights without the training config: the timm
architecture, classes, input size and crop, normalisation, the decision rule, and how
test-time augmentation must treat the labels. Keys added later have defaults, so models saved
before them still load.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from galaxytune.config import FitsConfig
from galaxytune.data.transforms import mirror_permutation
from galaxytune.decision import DecisionRule
from galaxytune.errors import ModelError
from galaxytune.files import write_json, write_tensors
from galaxytune.models.backbone import GalaxyClassifier, create_classifier
from galaxytune.run_folder import RunFolder

WEIGHTS, META = "model.safetensors", "model.json"


@dataclass
class ModelInfo:
    architecture: str
    classes: list[str]
    image_size: int
    center_crop: float
    mean: list[float]
    std: list[float]
    decision: dict[str, Any] = field(default_factory=dict)
    create_kwargs: dict[str, Any] = field(default_factory=dict)
    mirror_swap: list[list[str]] = field(default_factory=list)
    """Pairs of classes that a mirror flip swaps (``finetune.mirror_swap``), for TTA."""
    tta: bool = False
    """The decision rule was fitted on TTA logits (``decision.tta``): predict with TTA by default."""
    fits: dict[str, Any] = field(default_factory=dict)
    """How FITS cutouts were turned into images (``data.fits``), so new cutouts get the same stretch."""
    stretch: str = "none"
    """The network's own stretch of pixel values (``data.stretch``)."""
    stretch_softening: float | list[float] = 0.05

    @property
    def fits_config(self) -> FitsConfig | None:
        return FitsConfig(**self.fits) if self.fits else None

    @property
    def rule(self) -> DecisionRule:
        return DecisionRule(**self.decision) if self.decision else DecisionRule()

    @property
    def mirror(self) -> list[int]:
        """The class each class becomes under a mirror flip."""
        return mirror_permutation(self.classes, self.mirror_swap)


def save_model(net: GalaxyClassifier, info: ModelInfo, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_tensors(folder / WEIGHTS, net.state_dict())
    write_json(folder / META, asdict(info))


def model_folder(path: str | Path) -> Path:
    """Accept a run folder or its ``models/`` folder."""
    path = Path(path).expanduser()
    for folder in (RunFolder(path).models, path):
        if (folder / META).is_file() and (folder / WEIGHTS).is_file():
            return folder
    raise ModelError(
        f"{path} holds no saved model ({'models/' + META} and {'models/' + WEIGHTS}). "
        "Pass the run folder that `galaxytune train --out` wrote."
    )


def _info_problem(info: ModelInfo) -> str:
    """What makes a model description unusable ('' when nothing)."""
    decision = info.decision or {}
    offsets = decision.get("offsets", [])
    temperature = decision.get("temperature", 1.0)
    if not info.classes or len(set(info.classes)) != len(info.classes):
        return "'classes' must be distinct class names"
    if not isinstance(info.image_size, int) or info.image_size < 16:
        return f"'image_size' {info.image_size!r} must be a whole number of pixels, 16 or more"
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        return f"the decision rule's temperature {temperature!r} must be above 0"
    if offsets and len(offsets) != len(info.classes):
        return f"the decision rule has {len(offsets)} offsets for {len(info.classes)} classes"
    if not 0 < info.center_crop <= 1:
        return f"'center_crop' {info.center_crop!r} must be in (0, 1]"
    return ""


def load_model(path: str | Path) -> tuple[GalaxyClassifier, ModelInfo]:
    folder = model_folder(path)
    try:
        info = ModelInfo(**json.loads((folder / META).read_text()))
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{folder / META} is not a galaxytune model description ({exc}).") from exc
    problem = _info_problem(info)
    if problem:
        raise ModelError(f"{folder / META}: {problem}. Was it edited by hand? Restore it from the run folder.")
    net = create_classifier(
        info.architecture, len(info.classes), weights="none", mean=info.mean, std=info.std,
        kwargs=info.create_kwargs, stretch=info.stretch, softening=info.stretch_softening,
    )
    try:
        net.load_state_dict(load_file(str(folder / WEIGHTS)))
    # A missing, truncated or non-safetensors file; keys or shapes of another architecture (RuntimeError).
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise ModelError(f"{folder / WEIGHTS} does not hold weights for {META}'s model: {exc}") from exc
    return net.eval(), info
