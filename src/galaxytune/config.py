"""One typed configuration for a run, loadable from YAML and saved with every run.

Keys are grouped (``data.image_size``, ``finetune.lr`` ...). An unknown key anywhere, in a
YAML file or a command-line override, is an error that names it: a typo must never be
silently ignored and leave the user training with a default they did not ask for.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from galaxytune.errors import ConfigError
from galaxytune.files import write_text

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
OFFSET_RULES = ("bagged", "greedy")


DATA_FORMATS = ("auto", "folder", "csv", "gz2", "kaggle_gz", "gz_decals", "galaxy10", "fits")


@dataclass
class BinaryConfig:
    """A yes/no question: ``column >= threshold`` is the positive class (docs/data_formats.md)."""

    column: str = ""
    threshold: float = 0.5
    positive: str = "yes"
    negative: str = "no"
    votes: str = ""
    """Column counting the votes on this question (or a sum 'a_count + b_count'), for min_votes."""
    min_votes: int = 0


@dataclass
class LabelsConfig:
    """Class labels from vote fractions (docs/data_formats.md); empty: labels from data.label_column."""

    rules: list[dict[str, str]] = field(default_factory=list)
    """Ordered '- class: "column >= 0.5 and column < 0.2"' entries; the first that holds wins."""
    binary: BinaryConfig = field(default_factory=BinaryConfig)
    votes: str = ""
    """Column counting each galaxy's votes (or a sum 'a + b'); empty: the format's own, if any."""
    min_votes: int = 0
    min_confidence: float = 0.0
    """Least product of the fractions a matched rule requires to be high (its '>=' and '>' clauses)."""
    soft: dict[str, str] = field(default_factory=dict)
    """Soft targets for one question: class -> its vote-fraction column. Training fits the fractions
    themselves (cross-entropy to the fraction vector); a galaxy's class is its most-voted answer."""
    questions: str = "auto"
    """'auto': when the vote table counts every answer of every Galaxy Zoo question (GZ2, GZ
    DECaLS), the finetune stage also learns those counts in a second head (finetune.question_weight);
    'off': the class alone."""


@dataclass
class FitsConfig:
    """How FITS cutouts become 8-bit RGB (docs/data_formats.md)."""

    bands: list[int] = field(default_factory=list)
    """Planes shown as red, green, blue (or one: grey), counted from 0 over the file's image HDUs
    and cube planes; empty: all planes of a file with one or three."""
    band_files: list[str] = field(default_factory=list)
    """One file per band: the name tokens of the bands, e.g. [_i, _r, _g]."""
    stretch: str = "asinh"
    """'asinh' or 'percentile' (linear between the percentiles)."""
    percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])
    asinh_softening: float = 0.1


@dataclass
class DataConfig:
    path: str = ""
    """An image-folder root (train/, val/, optional test/), a CSV catalog, a Galaxy Zoo vote table
    or an HDF5 file (docs/data_formats.md)."""
    format: str = "auto"
    """One of DATA_FORMATS; 'auto' tells them apart by file names and table columns."""
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    fits: FitsConfig = field(default_factory=FitsConfig)
    path_column: str = "filename"
    label_column: str = "label"
    image_size: int = 128
    center_crop: float = 1.0
    """Fraction of the (square-cropped) image kept around its centre before resizing."""
    stretch: str = "none"
    """'asinh': the network maps pixel values x in [0, 1] to asinh(x / stretch_softening) /
    asinh(1 / stretch_softening) before normalising (faint radio lobes and outer discs); it
    travels with the saved model and the ONNX export. 'none': linear."""
    stretch_softening: float = 0.05
    split_folders: dict[str, str] = field(default_factory=dict)
    """Image folders: split -> folder name where it is not the usual one, e.g. {test: valid} to
    hold a source's own balanced valid/ folder out as the test split (val is then carved from
    train)."""
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0
    cache_images: str = "auto"
    """Keep decoded images in memory: 'auto' (when they fit in cache_limit_gb), 'yes' or 'no'."""
    cache_limit_gb: float = 4.0
    disk_cache: str = "auto"
    """Decoded images and stage-1 features kept on disk across runs (galaxytune.cache), keyed by
    the images' content and the settings they depend on: 'auto' (in $GALAXYTUNE_CACHE, else
    ~/.cache/galaxytune), 'off', or a folder. Only when the decoded images fit in memory."""
    num_workers: int = -1
    """DataLoader workers; -1 picks from the CPU count."""
    leakage: str = "warn"
    """Images of val/test also in train (identical or near-duplicate): 'warn', 'fail' or 'off'."""
    leakage_max_distance: int = 30
    """Largest perceptual-hash distance (of 256 bits) that counts as a near-duplicate. On the
    6,741 GZ2 SDSS cutouts distinct galaxies came as close as 36; resized JPEG copies stayed
    within 32 (mean 17)."""


@dataclass
class ModelConfig:
    name: str = "mobilenetv1_100"
    weights: str = "hub"
    """'hub' (timm's pretrained weights), 'none' (random init) or a local file path."""
    mean: list[float] | None = None
    """Input normalisation; None takes the value the weights' timm config declares."""
    std: list[float] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra arguments for timm.create_model, e.g. {pad_type: same} for TF-ported weights."""
    drop_rate: float = 0.2


@dataclass
class TransferConfig:
    enabled: bool = True
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    patience: int = 10


@dataclass
class FinetuneConfig:
    enabled: bool = True
    method: str = "full"
    """'full', 'top-blocks', 'lora', 'bias-norm', or 'head' (transfer stage only). 'full' (every
    layer, LR decayed by layer_decay per layer group downwards) had the best validation accuracy
    on gz2 and gz1 over 3 seeds, at under twice the time per epoch of 'top-blocks' and less than
    LoRA's (docs/benchmarks.md, "Finetune methods")."""
    top_blocks: int = 4
    """Number of timm layer groups (counted from the head) that are unfrozen."""
    layer_decay: float = 0.7
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lr: float = 1e-3
    weight_decay: float = 0.05
    epochs: int = 15
    warmup_epochs: float = 1.0
    patience: int = 4
    batch_size: int = 64
    batchnorm: str = "frozen"
    """'frozen' keeps BatchNorm statistics fixed (eval mode); 'train' updates them in the layers
    that train. Measured with top-blocks on gz2 and gz1 (docs/benchmarks.md): no consistent
    winner on validation, so the default is the one that cannot drift the pretrained statistics."""
    label_smoothing: float = 0.1
    class_weights: str = "none"
    """Weights of the training loss per class: 'balanced' (inverse frequency in train), 'sqrt'
    (its square root: rare classes count more, less so) or 'none'."""
    augment: bool = True
    """Random flips and rotations (galaxies have no preferred orientation), zoom and shift."""
    rotate: str = "quarter"
    """'quarter': turns by multiples of 90 degrees (exact on the pixel grid); 'any': by any angle,
    resampled bilinearly. On gz2 at 64 px any-angle turns with zoom and shift lost on validation
    (the resampling blurs small cutouts that test images never are; docs/benchmarks.md)."""
    zoom: float = 0.0
    """Training images are scaled by a random factor in [1 - zoom, 1 + zoom] (e.g. 0.1)."""
    shift: float = 0.0
    """... and shifted by up to this fraction of their side (e.g. 0.05)."""
    start_size: int = 0
    """Progressive resizing: the first start_fraction of the epochs train on images shrunk to
    this many pixels (cheaper epochs), the rest at data.image_size; 0: off."""
    start_fraction: float = 0.5
    question_weight: float = 0.5
    """Weight of the question head's loss (every Galaxy Zoo answer's votes, data.labels.questions)
    beside the class loss; 0 trains the class head alone. Not used with method 'lora'."""
    question_loss: str = "dirichlet"
    """'dirichlet' (Dirichlet-multinomial on the vote counts, as Zoobot) or 'cross_entropy' (to
    each question's vote fractions)."""
    mirror_swap: list[list[str]] = field(default_factory=list)
    """Pairs of classes that a mirror flip swaps, e.g. [[spiral_clockwise, spiral_anticlockwise]]:
    mirrored training images and TTA views get the other class of their pair. Rotations keep
    every label (see galaxytune.data.transforms)."""
    guard: bool = True
    """Keep the incoming (transfer) weights when no finetuned epoch beats them on validation.
    Benchmarks turn it off to measure a method on its own."""


@dataclass
class DecisionConfig:
    enabled: bool = True
    metric: str = "macro_f1"
    temperature: bool = True
    offsets: bool = True
    offset_range: float = 2.0
    """Largest absolute per-class logit offset tried; bounds how far the rule can overfit."""
    max_accuracy_drop: float = 0.01
    """The offsets are kept only if, judged out of bag on validation, they raise the tuned metric
    and cost at most this much accuracy (0.01: one point); otherwise the temperature alone is
    applied. The decision row of the stage table says which, with both changes."""
    offset_rule: str = "bagged"
    """'bagged': offsets averaged over greedy fits on 20 bootstrap resamples of validation, robust
    to small validation sets; 'greedy': one greedy fit on all of it (see docs/benchmarks.md)."""
    tta: bool | str = "auto"
    """true: fit the rule on the final network's TTA logits (8 rotations and flips; 8x the
    inference cost), and the saved model then predicts and evaluates with TTA by default;
    'auto': the same if TTA beats the plain logits on validation, else not; false: never."""


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    monitor: str = "macro_f1"
    """Validation metric for early stopping, the best checkpoint and the finetune guard; 'loss' is
    the lowest validation cross-entropy (with soft targets: to the vote fractions)."""
    seed: int = 0
    progress: bool = True
    channels_last: bool = True
    """Train conv nets in the channels-last memory layout (about 1.3x faster on CPUs)."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def validate(self) -> None:
        for key, value, allowed in [
            ("decision.metric", self.decision.metric, METRICS),
            ("decision.offset_rule", self.decision.offset_rule, OFFSET_RULES),
            ("trainer.monitor", self.trainer.monitor, (*METRICS, "loss")),
            ("finetune.method", self.finetune.method, ("top-blocks", "lora", "full", "bias-norm", "head")),
            ("finetune.batchnorm", self.finetune.batchnorm, ("frozen", "train")),
            ("finetune.rotate", self.finetune.rotate, ("any", "quarter")),
            ("finetune.class_weights", self.finetune.class_weights, ("none", "sqrt", "balanced")),
            ("finetune.question_loss", self.finetune.question_loss, ("dirichlet", "cross_entropy")),
            ("data.cache_images", self.data.cache_images, ("auto", "yes", "no")),
            ("data.leakage", self.data.leakage, ("warn", "fail", "off")),
            ("data.labels.questions", self.data.labels.questions, ("auto", "off")),
            ("decision.tta", self.decision.tta, (True, False, "auto")),
            ("data.stretch", self.data.stretch, ("none", "asinh")),
            # Pure half precision would leave the model in half; mixed precision keeps float32 weights.
            ("trainer.precision", str(self.trainer.precision), ("32-true", "32", "16-mixed", "bf16-mixed")),
        ]:
            if value not in allowed or (isinstance(value, int) and not isinstance(value, bool)):
                raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(str, allowed))}.")
        _validate_data_sources(self.data)
        folders = self.data.split_folders
        if not (isinstance(folders, dict) and set(folders) <= {"train", "val", "test"}
                and all(isinstance(v, str) and v for v in folders.values())
                and len(set(folders.values())) == len(folders)):
            raise ConfigError(f"data.split_folders={folders!r} must map train, val or test to distinct folder "
                              "names, e.g. {test: valid}.")
        if not 0 < self.data.center_crop <= 1:
            raise ConfigError(f"data.center_crop={self.data.center_crop} must be in (0, 1].")
        if self.data.image_size < 16:
            raise ConfigError(f"data.image_size={self.data.image_size} is too small (>= 16).")
        for key, value in [
            ("transfer.epochs", self.transfer.epochs), ("transfer.batch_size", self.transfer.batch_size),
            ("finetune.epochs", self.finetune.epochs), ("finetune.batch_size", self.finetune.batch_size),
            ("finetune.lora_rank", self.finetune.lora_rank), ("transfer.patience", self.transfer.patience),
            ("finetune.patience", self.finetune.patience),
        ]:
            if value < 1:
                raise ConfigError(f"{key}={value} must be 1 or more.")
        fc, tc = self.finetune, self.transfer
        for key, value in [("transfer.lr", tc.lr), ("finetune.lr", fc.lr), ("finetune.layer_decay", fc.layer_decay)]:
            if not value > 0:
                raise ConfigError(f"{key}={value} must be above 0.")
        for key, value, low, high in [
            ("transfer.weight_decay", tc.weight_decay, 0.0, 10.0),
            ("finetune.weight_decay", fc.weight_decay, 0.0, 10.0),
            ("finetune.label_smoothing", fc.label_smoothing, 0.0, 0.99),
            ("model.drop_rate", self.model.drop_rate, 0.0, 0.99),
            ("finetune.warmup_epochs", fc.warmup_epochs, 0.0, float(fc.epochs)),
            ("decision.offset_range", self.decision.offset_range, 0.0, 100.0),
            ("data.stretch_softening", self.data.stretch_softening, 1e-4, 10.0),
            ("finetune.zoom", fc.zoom, 0.0, 0.5), ("finetune.start_fraction", fc.start_fraction, 0.0, 1.0),
            ("finetune.start_size", fc.start_size, 0, self.data.image_size), ("finetune.shift", fc.shift, 0.0, 0.25),
            ("finetune.question_weight", fc.question_weight, 0.0, 100.0),
            ("decision.max_accuracy_drop", self.decision.max_accuracy_drop, 0.0, 1.0),
        ]:
            if not low <= value <= high:
                raise ConfigError(f"{key}={value} must be between {low} and {high}.")
        for key, value in [("data.val_fraction", self.data.val_fraction),
                           ("data.test_fraction", self.data.test_fraction)]:
            if not 0 < value < 0.5:
                raise ConfigError(f"{key}={value} must be between 0 and 0.5.")
        for key in ("mean", "std"):
            value = getattr(self.model, key)
            if value is not None and (
                not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, (int, float)) for v in value)
            ):
                raise ConfigError(f"model.{key}={value!r} must be three numbers, e.g. [0.5, 0.5, 0.5].")
        swaps = self.finetune.mirror_swap
        if not isinstance(swaps, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(c, str) for c in p) and p[0] != p[1] for p in swaps
        ):
            raise ConfigError(
                f"finetune.mirror_swap={swaps!r} must be a list of pairs of two different class names, "
                "e.g. [[spiral_clockwise, spiral_anticlockwise]] (quote names that look like numbers)."
            )


def _validate_data_sources(data: DataConfig) -> None:
    from galaxytune.data.votes import parse_rules

    if data.format not in DATA_FORMATS:
        raise ConfigError(f"data.format={data.format!r} is not one of {', '.join(DATA_FORMATS)}.")
    labels, fits = data.labels, data.fits
    parse_rules(labels.rules)
    if sum(map(bool, (labels.rules, labels.binary.column, labels.soft))) > 1:
        raise ConfigError("data.labels declares more than one of rules, binary and soft; keep one.")
    if labels.soft and not (isinstance(labels.soft, dict) and len(labels.soft) >= 2
                            and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.soft.items())):
        raise ConfigError(f"data.labels.soft={labels.soft!r} must map two or more class names to their "
                          "vote-fraction columns, e.g. {smooth: t01_smooth_or_features_a01_smooth_fraction, ...}.")
    for key, value in [("data.labels.min_votes", labels.min_votes),
                       ("data.labels.binary.min_votes", labels.binary.min_votes)]:
        if value < 0:
            raise ConfigError(f"{key}={value} must be 0 or more.")
    if not 0 <= labels.min_confidence <= 1:
        raise ConfigError(f"data.labels.min_confidence={labels.min_confidence} must be between 0 and 1.")
    if labels.binary.min_votes > 0 and not labels.binary.votes:
        raise ConfigError("data.labels.binary.min_votes needs data.labels.binary.votes: the column counting the "
                          "votes on that question (or a sum 'a_count + b_count').")
    if labels.binary.positive == labels.binary.negative:
        raise ConfigError("data.labels.binary.positive and .negative must be two different class names.")
    if fits.stretch not in ("asinh", "percentile"):
        raise ConfigError(f"data.fits.stretch={fits.stretch!r} is not one of asinh, percentile.")
    if not (isinstance(fits.bands, list) and len(fits.bands) in (0, 1, 3)
            and all(isinstance(b, int) and b >= 0 for b in fits.bands)):
        raise ConfigError(f"data.fits.bands={fits.bands!r} must be one or three plane numbers from 0, e.g. [2, 1, 0].")
    if not (isinstance(fits.band_files, list) and all(isinstance(t, str) and t for t in fits.band_files)):
        raise ConfigError(f"data.fits.band_files={fits.band_files!r} must be file-name tokens, e.g. [_i, _r, _g].")
    lo_hi = fits.percentiles
    if not (isinstance(lo_hi, list) and len(lo_hi) == 2 and all(isinstance(v, (int, float)) for v in lo_hi)
            and 0 <= lo_hi[0] < lo_hi[1] <= 100):
        raise ConfigError(f"data.fits.percentiles={lo_hi!r} must be [low, high] with 0 <= low < high <= 100.")
    if fits.asinh_softening <= 0:
        raise ConfigError(f"data.fits.asinh_softening={fits.asinh_softening} must be above 0.")


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys by full name."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)  # YAML keys may be numbers or null
            hint = f" Did you mean {prefix}{close[0]}?" if close else ""
            raise ConfigError(f"Unknown config key '{prefix}{key}'.{hint}")
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise ConfigError(f"Config key '{prefix}{key}' must be a mapping of settings.")
            kwargs[key] = _build(hints[key], value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check scalar settings against their declared type (YAML reads '3e-4' as a string)."""
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"Config key '{key}' must be true or false, not {value!r}.")
        return value
    if hint in (int, float):
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond any float
            number = None
        if number is None or (hint is int and not number.is_integer()):
            kind = "an integer" if hint is int else "a number"
            raise ConfigError(f"Config key '{key}' must be {kind}, not {value!r}.")
        return hint(number)
    if hint is str and not isinstance(value, str):
        if isinstance(value, (dict, list)):
            raise ConfigError(f"Config key '{key}' must be a single value, not {value!r}.")
        return str(value)
    return value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class _Loader(yaml.SafeLoader):
    """YAML with only true/false as booleans: YAML 1.1 would read 'data.leakage: off' or
    'data.cache_images: no' as False and lose the word the user wrote."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def parse_override(text: str) -> dict[str, Any]:
    """Turn ``finetune.lr=3e-4`` into ``{'finetune': {'lr': 0.0003}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"Override '{text}' must look like section.key=value.")
    key, raw = text.split("=", 1)
    try:
        value = read_yaml(raw) if raw else ""
    except yaml.YAMLError:
        raise ConfigError(f"Override '{text}': the value is not valid YAML; quote it.") from None
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_config(
    file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
    flags: dict[str, Any] | None = None,
) -> Config:
    """Defaults, then ``base``, then the YAML ``file``, then ``flags`` (literal values, e.g. paths
    from command-line options: never parsed as YAML), then ``overrides`` (later wins)."""
    values: dict[str, Any] = dict(base or {})
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist.")
        try:
            loaded = read_yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"Config file {path} must hold a mapping of sections.")
        values = _merge(values, loaded)
    values = _merge(values, flags or {})
    for text in overrides:
        values = _merge(values, parse_override(text))
    config = _build(Config, values, "")
    config.validate()
    return config
