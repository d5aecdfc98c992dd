"""Create a timm backbone with a new head, from hub weights, a local file, or none.

``model.name`` is a timm registry name (``convnext_nano``), a Hugging Face Hub repo
(``hf-hub:mwalmsley/zoobot-encoder-convnext_nano``, Zoobot's galaxy-pretrained encoders among
them) or a local copy of one (``local-dir:/path/to/folder`` holding its ``config.json`` and
weights file), as timm's ``create_model`` reads them.

The network takes images scaled to [0, 1] (or uint8) and normalises them itself, with the
mean and std that its weights expect, so that every caller (training, prediction, ONNX) feeds
the same thing and normalisation cannot be forgotten or applied twice.
"""

from __future__ import annotations

import difflib
import pickle
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub.errors import EntryNotFoundError
from timm.layers import DropPath
from torch import nn

from galaxytune.cache import file_digest
from galaxytune.errors import ModelError


def stretch_pixels(x: torch.Tensor, stretch: str, softening: float | list[float]) -> torch.Tensor:
    """Pixel values x in [0, 1] as the network takes them in (``data.stretch``): 'asinh' maps x
    to asinh(x / softening) / asinh(1 / softening), lifting faint emission (radio lobes, outer
    discs) out of the bottom few grey levels; 'none' leaves them linear. A list of softenings
    gives each channel its own."""
    if stretch != "asinh":
        return x
    soft = torch.tensor(softening, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # per channel of (C, H, W) or a batch
    return torch.asinh(x / soft) / torch.asinh(1.0 / soft)


def drop_path_is_idle(backbone: nn.Module) -> bool:
    """True when the network has drop-path layers but every one sits in a block without a skip
    connection, which timm's blocks then never call: ``drop_path_rate`` is accepted and does
    nothing (timm's MobileNetV1 has no residual blocks at all)."""
    owners = [parent for parent in backbone.modules() for child in parent.children()
              if isinstance(child, DropPath) and child.drop_prob > 0]
    return bool(owners) and not any(getattr(parent, "has_skip", True) for parent in owners)


class GalaxyClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, mean: list[float], std: list[float], stretch: str = "none",
                 softening: float | list[float] = 0.05):
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


def model_source(name: str) -> tuple[str | None, str]:
    """('hf-hub', repo id), ('local-dir', folder) or (None, registry name); a clear error for a
    name timm cannot place."""
    try:
        source, model_id = timm.models.parse_model_name(name)
    except ValueError as exc:  # e.g. a repo id or a path without its prefix
        raise ModelError(f"model.name: {exc}") from None
    if source is None and not timm.is_model(name):
        raise _unknown_model(name)
    if source == "local-dir" and not (Path(model_id).expanduser() / "config.json").is_file():
        raise ModelError(
            f"model.name={name}: {Path(model_id).expanduser() / 'config.json'} does not exist. A local-dir "
            "folder is a copy of a Hub model repo: its config.json and its weights file "
            "(model.safetensors or pytorch_model.bin)."
        )
    return source, model_id


def source_model_args(name: str) -> dict[str, Any]:
    """The ``model_args`` that a Hub repo's or local-dir folder's config.json builds its
    architecture with (timm applies them under model.kwargs); none for a registry name. A saved
    model is rebuilt from the registry name, so it must keep them."""
    source, model_id = model_source(name)
    if source is None:
        return {}
    from timm.models import _hub  # the readers timm itself uses for these names

    read = _hub.load_model_config_from_hf if source == "hf-hub" else _hub.load_model_config_from_path
    return dict(read(model_id)[2] or {})


def weights_identity(name: str, weights: str) -> str:
    """What the loaded weights are, for cache keys: a file's digest, a local-dir folder's files'
    digests (its contents may change under the same name), or 'hub'/'none'."""
    if weights not in ("hub", "none"):
        return file_digest(Path(weights).expanduser())
    source, model_id = model_source(name)
    if source == "local-dir" and weights == "hub":
        files = sorted(p for p in Path(model_id).expanduser().iterdir() if p.is_file())
        return ",".join(f"{p.name}:{file_digest(p)}" for p in files)
    return weights


def _check_weights_fit(name: str, origin: str, backbone: nn.Module, options: dict[str, Any],
                       rng_state: torch.Tensor) -> None:
    """Stop when most of the backbone kept its random initialisation: timm loads weights of
    another architecture without complaint (it drops the keys it does not know), which would
    train a random network under a pretrained one's name. The initialisation is replayed from
    ``rng_state``, the random state the build started from; the caller's state is left as the
    build left it. A few tensors may equal their initial value by nature (TF-ported MobileNets'
    BatchNorm scales are all ones), hence a share rather than any."""
    after = torch.random.get_rng_state()
    torch.random.set_rng_state(rng_state)
    try:
        initial = dict(timm.create_model(name, pretrained=False, **options).named_parameters())
    finally:
        torch.random.set_rng_state(after)
    head = {id(p) for p in backbone.get_classifier().parameters()}
    params = {key: p for key, p in backbone.named_parameters() if id(p) not in head}
    untouched = [key for key, p in params.items() if torch.equal(p, initial[key])]
    share = sum(params[key].numel() for key in untouched) / max(1, sum(p.numel() for p in params.values()))
    if share > 0.5:
        raise ModelError(
            f"The weights from {origin} do not fit timm model {name}: {share:.0%} of its backbone "
            f"kept its random initialisation ({len(untouched)} of {len(params)} tensors, e.g. "
            f"{', '.join(untouched[:3])}). Were they saved from another architecture? Set model.name "
            "to the one they came from (for a Hub repo, the 'architecture' in its config.json)."
        )


def create_classifier(
    name: str,
    num_classes: int,
    weights: str = "hub",
    mean: list[float] | None = None,
    std: list[float] | None = None,
    drop_rate: float = 0.0,
    kwargs: dict[str, Any] | None = None,
    stretch: str = "none",
    softening: float | list[float] = 0.05,
) -> GalaxyClassifier:
    """A :class:`GalaxyClassifier` for ``num_classes`` on timm model ``name``.

    ``weights``: 'hub' loads the name's own pretrained weights (timm's default tag, the Hub repo's
    or the local-dir folder's); 'none' starts from random weights; anything else is a local
    safetensors file or a (possibly nested) state dict. The weights' classifier, if any, is
    dropped and replaced by a new head.
    """
    source, model_id = model_source(name)
    options: dict[str, Any] = dict(kwargs or {}, num_classes=num_classes, drop_rate=drop_rate)
    if weights not in ("hub", "none"):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelError(f"Weights file {path} does not exist.")
        options["pretrained_cfg_overlay"] = dict(file=str(path))
    origin = {"hf-hub": f"the Hub repo {model_id}", "local-dir": f"the folder {model_id}"}.get(source, "timm's hub")
    origin = origin if weights in ("hub", "none") else weights
    rng_state = torch.random.get_rng_state()
    try:
        backbone = timm.create_model(name, pretrained=weights != "none", **options)
        if weights != "none":
            _check_weights_fit(name, origin, backbone, options, rng_state)
    except TypeError as exc:  # an argument the architecture does not take
        raise ModelError(f"timm model {name} rejects model.kwargs={kwargs}: {exc}") from None
    except (OSError, EntryNotFoundError) as exc:  # no network, hub unreachable, no such repo or file
        way_out = (
            "Offline? Copy the repo's folder (config.json and weights) from a machine that has the Hub, "
            "and set model.name=local-dir:FOLDER." if source == "hf-hub"
            else "Offline? Pass a local file with --weights PATH."
        )
        raise ModelError(f"Could not fetch {name} from {origin} ({type(exc).__name__}: {exc}). {way_out}") from None
    except (*UNREADABLE_WEIGHTS, _safetensors_error()) as exc:
        raise ModelError(
            f"Could not load pretrained weights for {name} from {origin}: {type(exc).__name__}: {exc}\n"
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
