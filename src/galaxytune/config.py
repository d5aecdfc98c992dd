"""One typed configuration for a run, loadable from YAML and saved with every run.

Keys are grouped (``data.image_size``, ``finetune.lr`` ...). An unknown key anywhere, in a
YAML file or a command-line override, is an error that names it: a typo must never be
silently ignored and leave the user training with a default they did not ask for.

Every setting is declared with :func:`setting`: its default, one line of help and what it
allows (choices, a numeric range, or a check with its description). :meth:`Config.validate`
checks them all in one place, and ``galaxytune config`` lists them from the same declarations.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from galaxytune.data.label_rules import parse_rules
from galaxytune.decision import OFFSET_RULES
from galaxytune.errors import ConfigError
from galaxytune.evaluation.metrics import METRICS
from galaxytune.files import write_text
from galaxytune.models.methods import DEFAULT_METHOD, FINETUNE_METHODS, methods_help
from galaxytune.models.methods import method as finetune_method

DATA_FORMATS = ("auto", "folder", "csv", "gz2", "kaggle_gz", "gz_decals", "galaxy10", "fits")
QUESTION_LOSSES = ("dirichlet", "cross_entropy")
"""The names of galaxytune.training.losses.QUESTION_LOSSES (not imported here: it needs torch)."""
LOGGERS = ("csv", "tensorboard", "wandb")
# Pure half precision would leave the model in half; mixed precision keeps float32 weights.
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed")
MAX_SEED = 2**31 - 1


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    choices: tuple | None = None,
    at_least: float | str | None = None,
    above: float | str | None = None,
    at_most: float | str | None = None,
    below: float | str | None = None,
    check: Callable[[Any], bool] | None = None,
    allowed: str = "",
) -> Any:
    """A config field with its one line of ``help`` and what it allows: ``choices``; a range
    (``at_least``/``above`` and ``at_most``/``below``; a bound may name another key, e.g.
    ``"finetune.epochs"``); or a ``check`` predicate, ``allowed`` saying in words what it
    accepts. ``factory`` makes mutable defaults (lists, dicts, sub-sections)."""
    meta = {"help": help, "choices": choices, "low": above if above is not None else at_least,
            "low_open": above is not None, "high": below if below is not None else at_most,
            "high_open": below is not None, "check": check, "allowed": allowed}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _is_list_of(kind: type, length: tuple[int, ...] | None = None) -> Callable[[Any], bool]:
    return lambda v: (isinstance(v, list) and (length is None or len(v) in length)
                      and all(isinstance(x, kind) and not isinstance(x, bool) for x in v))


def _three_numbers_or_none(value: Any) -> bool:
    return value is None or _is_list_of((int, float), (3,))(value)


def _split_folders(value: Any) -> bool:
    return (isinstance(value, dict) and set(value) <= {"train", "val", "test"}
            and all(isinstance(v, str) and v for v in value.values()) and len(set(value.values())) == len(value))


def _mirror_pairs(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(c, str) for c in p) and p[0] != p[1] for p in value)


def _soft_columns(value: Any) -> bool:
    return value == {} or (isinstance(value, dict) and len(value) >= 2
                           and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()))


def _softenings(value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    return len(values) in (1, 3) and all(1e-4 <= v <= 10 for v in values)


def _percentiles(value: Any) -> bool:
    return _is_list_of((int, float), (2,))(value) and 0 <= value[0] < value[1] <= 100


def _plane_numbers(value: Any) -> bool:
    return _is_list_of(int, (0, 1, 3))(value) and all(b >= 0 for b in value)


def _tokens(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, str) and t for t in value)


def _mapping(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


@dataclass
class BinaryConfig:
    """A yes/no question: ``column >= threshold`` is the positive class (docs/data_formats.md)."""

    column: str = setting("", "Vote-fraction column of a yes/no question; empty: no such question.")
    threshold: float = setting(0.5, "Fraction at or above which a galaxy is the positive class.", at_least=0, at_most=1)
    positive: str = setting("yes", "Class name of the galaxies at or above the threshold.")
    negative: str = setting("no", "Class name of the others.")
    votes: str = setting("", "Column counting the votes on this question (or a sum 'a_count + b_count'), "
                             "for min_votes.")
    min_votes: int = setting(0, "Fewest votes on this question a galaxy needs to be kept.", at_least=0)


@dataclass
class LabelsConfig:
    """Class labels from vote fractions (docs/data_formats.md); empty: labels from data.label_column."""

    rules: list[dict[str, str]] = setting(
        help="Ordered '- class: \"column >= 0.5 and column < 0.2\"' entries on vote fractions; the first that "
             "holds wins.", factory=list, allowed="a list of '- class: condition' entries")
    binary: BinaryConfig = setting(help="A yes/no question with a threshold on one vote fraction.",
                                   factory=BinaryConfig)
    votes: str = setting("", "Column counting each galaxy's votes (or a sum 'a + b'); empty: the format's own, "
                             "if any.")
    min_votes: int = setting(0, "Fewest votes a galaxy needs to be kept.", at_least=0)
    min_confidence: float = setting(
        0.0, "Least product of the fractions a matched rule requires to be high (its '>=' and '>' clauses).",
        at_least=0, at_most=1)
    soft: dict[str, str] = setting(
        help="Soft targets for one question: class -> its vote-fraction column; training fits the fractions.",
        factory=dict, check=_soft_columns,
        allowed="empty, or two or more class names mapped to their vote-fraction columns, e.g. "
                "{smooth: t01_smooth_or_features_a01_smooth_fraction, ...}")
    """Training fits the fractions themselves (cross-entropy to the fraction vector); a galaxy's
    class is its most-voted answer."""
    vote_redraws: int = setting(
        0, "With rules: train on each galaxy's share of this many re-votes per class (soft targets that know how "
           "near a threshold it sits); validation and test keep the one class. 0: the one class. Needs the vote "
           "counts behind the rules' fractions.", at_least=0, at_most=10000)
    """A re-vote asks each question the rules read of as many volunteers as answered it, with answer
    shares drawn from the posterior of the observed counts: a galaxy whose smooth fraction is 0.52
    of 40 votes trains as roughly 60% smooth, one at 0.95 as smooth alone."""
    questions: str = setting(
        "auto", "'auto': also learn every Galaxy Zoo question's vote counts in a second head when the table has "
                "them; 'off': the class alone.", choices=("auto", "off"))
    """'auto': when the vote table counts every answer of every Galaxy Zoo question (GZ2, GZ
    DECaLS), the finetune stage also learns those counts in a second head (finetune.question_weight)."""


@dataclass
class FitsConfig:
    """How FITS cutouts become 8-bit RGB (docs/data_formats.md)."""

    bands: list[int] = setting(
        help="Planes shown as red, green, blue (or one: grey), counted from 0; empty: all planes of a file with "
             "one or three.", factory=list, check=_plane_numbers,
        allowed="one or three plane numbers from 0, e.g. [2, 1, 0], or [] for all")
    """Planes are counted over the file's image HDUs and cube planes."""
    band_files: list[str] = setting(help="One file per band: the name tokens of the bands, e.g. [_i, _r, _g].",
                                    factory=list, check=_tokens, allowed="file-name tokens, e.g. [_i, _r, _g]")
    stretch: str = setting("asinh", "'asinh', or 'percentile' (linear between the percentiles).",
                           choices=("asinh", "percentile"))
    percentiles: list[float] = setting(help="Each band is clipped to these percentiles of its finite pixels.",
                                       factory=lambda: [0.5, 99.5], check=_percentiles,
                                       allowed="[low, high] with 0 <= low < high <= 100")
    asinh_softening: float = setting(0.1, "Softening of the asinh stretch: smaller lifts faint outskirts more.",
                                     above=0)


@dataclass
class DataConfig:
    """Where the images are, their labels and splits, and how they become tensors."""

    path: str = setting("", "An image-folder root (train/, val/, optional test/), a CSV catalog, a Galaxy Zoo vote "
                            "table or an HDF5 file (docs/data_formats.md).")
    format: str = setting("auto", "The data's layout; 'auto' tells them apart by file names and table columns.",
                          choices=DATA_FORMATS)
    labels: LabelsConfig = setting(help="Class labels from vote fractions; empty: from data.label_column.",
                                   factory=LabelsConfig)
    fits: FitsConfig = setting(help="How FITS cutouts become 8-bit RGB.", factory=FitsConfig)
    path_column: str = setting("filename", "CSV column with image paths (relative to the CSV's folder).")
    label_column: str = setting("label", "CSV column with class labels.")
    image_size: int = setting(128, "Side in pixels of the square images the network sees.", at_least=16)
    center_crop: float = setting(1.0, "Fraction of the (square-cropped) image kept around its centre before "
                                      "resizing.", above=0, at_most=1)
    stretch: str = setting("none", "'asinh': the network asinh-stretches pixel values before normalising (faint "
                                   "lobes and outer discs); 'none': linear.", choices=("none", "asinh"))
    """'asinh' maps pixel values x in [0, 1] to asinh(x / stretch_softening) / asinh(1 /
    stretch_softening); it travels with the saved model and the ONNX export."""
    stretch_softening: float | list[float] = setting(
        0.05, "Softening of data.stretch=asinh, or one per channel: [1, 0.05, 0.005] shows a greyscale image "
              "at three stretches, from near-linear (bright cores) to strong (faint lobes).",
        check=_softenings, allowed="a number between 0.0001 and 10, or three such numbers")
    """A softening of 1 or more is close to linear; one per channel gives the network a greyscale
    image's bright and faint structure at once, as three colours."""
    split_folders: dict[str, str] = setting(
        help="Image folders: split -> folder name where it is not the usual one, e.g. {test: valid}.",
        factory=dict, check=_split_folders,
        allowed="a mapping of train, val or test to distinct folder names, e.g. {test: valid}")
    """E.g. {test: valid} holds a source's own balanced valid/ folder out as the test split (val is
    then carved from train)."""
    val_fraction: float = setting(0.15, "Share of all images carved out of train for validation where the data "
                                        "has no val split.", above=0, below=0.5)
    test_fraction: float = setting(0.15, "Share of all images carved out of train for test where the data has no "
                                         "test split.", above=0, below=0.5)
    split_seed: int = setting(0, "Seed of the carved splits.", at_least=0, at_most=MAX_SEED)
    cache_images: str = setting("auto", "Keep decoded images in memory: 'auto' (when they fit in cache_limit_gb), "
                                        "'yes' or 'no'.", choices=("auto", "yes", "no"))
    cache_limit_gb: float = setting(4.0, "Most memory (GB) decoded images may take with cache_images=auto.",
                                    at_least=0)
    disk_cache: str = setting("auto", "Decoded images and stage-1 features kept on disk across runs: 'auto' "
                                      "($GALAXYTUNE_CACHE, else ~/.cache/galaxytune), 'off', or a folder.")
    """Keyed by the images' content and the settings they depend on (galaxytune.cache); only when
    the decoded images fit in memory."""
    num_workers: int = setting(-1, "DataLoader workers; -1 picks from the CPU count.", at_least=-1)
    leakage: str = setting("warn", "Images of val/test also in train (identical or near-duplicate): 'warn', "
                                   "'fail' or 'off'.", choices=("warn", "fail", "off"))
    leakage_max_distance: int = setting(30, "Largest perceptual-hash distance (of 256 bits) that counts as a "
                                            "near-duplicate.", at_least=0, at_most=256)
    """On the 6,741 GZ2 SDSS cutouts distinct galaxies came as close as 36; resized JPEG copies
    stayed within 32 (mean 17)."""


@dataclass
class ModelConfig:
    """The pretrained network."""

    name: str = setting("mobilenetv1_100", "timm model name; or hf-hub:OWNER/REPO, a timm model on the Hugging "
                                           "Face Hub (e.g. Zoobot's galaxy-pretrained "
                                           "hf-hub:mwalmsley/zoobot-encoder-convnext_nano); or local-dir:FOLDER, "
                                           "a copy of such a repo (its config.json and weights file).")
    weights: str = setting("hub", "'hub' (the name's pretrained weights: timm's, the Hub repo's or the folder's), "
                                  "'none' (random init) or a local file path.")
    mean: list[float] | None = setting(None, "Input normalisation mean; null: the one the weights' timm config "
                                             "declares.", check=_three_numbers_or_none,
                                       allowed="null or three numbers, e.g. [0.5, 0.5, 0.5]")
    std: list[float] | None = setting(None, "Input normalisation standard deviation; null: the timm config's.",
                                      check=_three_numbers_or_none,
                                      allowed="null or three numbers, e.g. [0.5, 0.5, 0.5]")
    kwargs: dict[str, Any] = setting(help="Extra arguments for timm.create_model, e.g. {pad_type: same} for "
                                          "TF-ported weights.", factory=dict, check=_mapping,
                                     allowed="a mapping of argument names to values")
    drop_rate: float = setting(0.2, "Dropout before the classifier head.", at_least=0, below=1)


@dataclass
class TransferConfig:
    """Stage 1: the head alone, trained on the frozen backbone's features (computed once)."""

    enabled: bool = setting(True, "Run stage 1.")
    epochs: int = setting(100, "Most epochs (early stopping usually ends the stage sooner).", at_least=1)
    lr: float = setting(1e-3, "Learning rate (AdamW, cosine schedule).", above=0)
    weight_decay: float = setting(1e-4, "AdamW weight decay.", at_least=0, at_most=10)
    batch_size: int = setting(256, "Feature vectors per batch.", at_least=1)
    patience: int = setting(10, "Epochs without a better trainer.monitor on validation before stopping.",
                            at_least=0)


@dataclass
class FinetuneConfig:
    """Stage 2: the network trained on images."""

    enabled: bool = setting(True, "Run stage 2 (false: the same as method 'head').")
    method: str = setting(DEFAULT_METHOD, methods_help(), choices=FINETUNE_METHODS)
    """'full' (every layer, LR decayed by layer_decay per layer group downwards) had the best
    validation accuracy on gz2 and gz1 over 3 seeds, at under twice the time per epoch of
    'top-blocks' and less than LoRA's (docs/benchmarks.md, "Finetune methods")."""
    top_blocks: int = setting(4, "With top-blocks: timm layer groups (counted from the head) that are unfrozen.",
                              at_least=0)
    layer_decay: float = setting(0.7, "LR multiplier per timm layer group, from the head downwards.",
                                 above=0, at_most=1)
    lora_rank: int = setting(8, "Rank of the LoRA adapters.", at_least=1)
    lora_alpha: float = setting(16.0, "LoRA scale numerator (updates are scaled by lora_alpha / lora_rank).",
                                above=0)
    lora_dropout: float = setting(0.05, "Dropout on the LoRA adapters' input.", at_least=0, below=1)
    lr: float = setting(1e-3, "Peak learning rate of the top layer group (AdamW, warm-up, then cosine).", above=0)
    weight_decay: float = setting(0.05, "AdamW weight decay (none on biases and norms).", at_least=0, at_most=10)
    epochs: int = setting(15, "Most epochs.", at_least=1)
    warmup_epochs: float = setting(1.0, "Epochs of linear learning-rate warm-up.",
                                   at_least=0, at_most="finetune.epochs")
    patience: int = setting(4, "Epochs without a better trainer.monitor on validation before stopping.",
                            at_least=0)
    patience_from: float = setting(0.0, "Share of the epochs before early stopping starts counting (e.g. 0.5: not "
                                        "before the cosine LR has halved); 0: from the first.",
                                   at_least=0, below=1)
    """While the learning rate is high, validation scores are noisy and a run can use up its
    patience long before the schedule has decayed (docs/benchmarks.md)."""
    batch_size: int = setting(64, "Images per batch.", at_least=1)
    batchnorm: str = setting("frozen", "'frozen' keeps BatchNorm statistics fixed; 'train' updates them in the "
                                       "layers that train.", choices=("frozen", "train"))
    """Measured with top-blocks on gz2 and gz1 (docs/benchmarks.md): no consistent winner on
    validation, so the default is the one that cannot drift the pretrained statistics."""
    label_smoothing: float = setting(0.1, "Label smoothing of the cross-entropy.", at_least=0, below=1)
    class_weights: str = setting("none", "Training-loss weight per class: 'balanced' (inverse frequency in "
                                         "train), 'sqrt' (its square root) or 'none'.",
                                 choices=("none", "sqrt", "balanced"))
    augment: bool = setting(True, "Random flips and rotations (galaxies have no preferred orientation), zoom and "
                                  "shift.")
    rotate: str = setting("quarter", "'quarter': turns by multiples of 90 degrees (exact); 'any': by any angle "
                                     "(resampled bilinearly).", choices=("quarter", "any"))
    """On gz2 at 64 px any-angle turns with zoom and shift lost on validation (the resampling
    blurs small cutouts that test images never are; docs/benchmarks.md)."""
    zoom: float = setting(0.0, "Training images are scaled by a random factor in [1 - zoom, 1 + zoom] (e.g. 0.1).",
                          at_least=0, at_most=0.5)
    shift: float = setting(0.0, "... and shifted by up to this fraction of their side (e.g. 0.05).",
                           at_least=0, at_most=0.25)
    brightness: float = setting(0.0, "... and brightened by a random factor in [1, 1 + brightness], clipped at the "
                                     "top of the range (faint emission lifted; e.g. 0.5); 0: off.",
                                at_least=0, at_most=10)
    blur: float = setting(0.0, "... and blurred by a Gaussian of a random sigma in [0, blur] pixels (seeing "
                               "varies; e.g. 1.0); 0: off.", at_least=0, at_most=5)
    noise: float = setting(0.0, "... and given Gaussian noise of a random standard deviation in [0, noise] of the "
                                "pixel range (depth varies; e.g. 0.02); 0: off.", at_least=0, at_most=0.5)
    start_size: int = setting(0, "Progressive resizing: the first start_fraction of the epochs train on images "
                                 "shrunk to this many pixels; 0: off.", at_least=0, at_most="data.image_size")
    start_fraction: float = setting(0.5, "Share of the epochs trained at start_size.", at_least=0, at_most=1)
    """Early stopping starts counting at the first full-size epoch: validated at full size, the
    shrunk epochs score low, and on gz2 they used up the patience before any full-size epoch.
    With that fixed, 64 px for half of gz2's 16 epochs saved 1-3 min a run and lost validation
    accuracy and macro-F1 on every seed (docs/benchmarks.md): off in every preset."""
    mixup: float = setting(0.0, "Mixup: blend each training batch with a shuffled copy of itself by a weight drawn "
                                "from Beta(mixup, mixup) (e.g. 0.2), targets blended alike; 0: off.",
                           at_least=0, at_most=10)
    cutmix: float = setting(0.0, "CutMix: paste a random box of a shuffled copy of each training batch, its area "
                                 "drawn from Beta(cutmix, cutmix) (e.g. 1.0), targets mixed by area; with mixup "
                                 "too, each batch takes one of the two; 0: off.", at_least=0, at_most=10)
    ema_epochs: float = setting(0.0, "Validate and keep an exponential moving average of the weights over about "
                                     "this many recent epochs instead of the raw weights; 0: off.",
                                at_least=0, at_most=100)
    """Lightning's WeightAveraging with an exponential average, its decay set from the epoch length
    (galaxytune.training.fit.EpochEMA). Early stopping and the best checkpoint see the average."""
    find_lr: bool = setting(False, "Before finetuning, sweep the learning rate up over 100 training steps "
                                   "(Lightning's Tuner.lr_find) and use the rate where the loss fell fastest in "
                                   "place of finetune.lr; the layer decay below it is kept.")
    """Single-process runs only. The sweep and its suggestion go to plots/lr_sweep.png and the
    finetune stage's note. After a transfer stage the head is already trained and the sweep's loss
    never falls: on FIRST it suggested rates a hundred times below the preset's, which lost
    (docs/benchmarks.md). Meant for a head that starts untrained (transfer.enabled=false)."""
    question_weight: float = setting(
        0.5, "Weight of the Galaxy Zoo question head's loss beside the class loss; 0: the class head alone.",
        at_least=0, at_most=100)
    """The question head learns every Galaxy Zoo answer's votes (data.labels.questions). Not used
    with method 'lora'."""
    question_loss: str = setting("dirichlet", "'dirichlet' (Dirichlet-multinomial on the vote counts, as Zoobot) "
                                              "or 'cross_entropy' (to each question's vote fractions).",
                                 choices=QUESTION_LOSSES)
    mirror_swap: list[list[str]] = setting(
        help="Pairs of classes that a mirror flip swaps, e.g. [[spiral_clockwise, spiral_anticlockwise]].",
        factory=list, check=_mirror_pairs,
        allowed="a list of pairs of two different class names, e.g. [[spiral_clockwise, spiral_anticlockwise]] "
                "(quote names that look like numbers)")
    """Mirrored training images and TTA views get the other class of their pair. Rotations keep
    every label (see galaxytune.data.transforms)."""
    guard: bool = setting(True, "Keep the incoming (transfer) weights when no finetuned epoch beats them on "
                                "validation.")
    """Benchmarks turn it off to measure a method on its own."""

    @property
    def runs(self) -> bool:
        """Whether stage 2 runs: the one switch the recipe reads. ``enabled: false`` and
        ``method: head`` are two spellings of "no stage 2", both accepted."""
        return self.enabled and finetune_method(self.method).runs_stage


@dataclass
class DecisionConfig:
    """Stage 3: a temperature and per-class logit offsets tuned on validation."""

    enabled: bool = setting(True, "Run stage 3.")
    metric: str = setting("macro_f1", "Validation metric the offsets are tuned for.", choices=METRICS)
    temperature: bool = setting(True, "Fit a temperature (calibrated probabilities).")
    offsets: bool = setting(True, "Fit per-class logit offsets for decision.metric.")
    offset_range: float = setting(2.0, "Largest absolute per-class logit offset tried; bounds how far the rule can "
                                       "overfit.", at_least=0, at_most=100)
    max_accuracy_drop: float = setting(0.01, "Most accuracy the offsets may cost, judged out of bag on validation "
                                             "(0.01: one point); else the temperature alone.",
                                       at_least=0, at_most=1)
    """The offsets are kept only if they raise the tuned metric. The decision row of the stage
    table says which, with both changes."""
    offset_rule: str = setting("bagged", "'bagged': offsets averaged over greedy fits on 20 bootstrap resamples of "
                                         "validation; 'greedy': one greedy fit on all of it.", choices=OFFSET_RULES)
    tta: bool | str = setting("auto", "Fit the rule on TTA logits (8 rotations and flips, 8x the inference cost): "
                                      "true, false, or 'auto' (if TTA beats the plain logits on validation).",
                              choices=(True, False, "auto"))
    """With TTA the saved model then predicts and evaluates with TTA by default."""


@dataclass
class TrainerConfig:
    """Lightning's Trainer, and how training reports itself."""

    accelerator: str = setting("auto", "Lightning accelerator: 'auto', 'cpu', 'gpu', 'mps' ...")
    devices: Any = setting("auto", "Lightning devices: 'auto', a number of devices, or a list of device ids.",
                           allowed="'auto', a number of devices, or a list of device ids")
    strategy: str = setting("auto", "Lightning strategy, e.g. 'ddp' for several GPUs.")
    num_nodes: int = setting(1, "Machines of a multi-node run.", at_least=1)
    precision: str = setting("32-true", "Numeric precision; mixed precision keeps float32 weights.",
                             choices=PRECISIONS)
    monitor: str = setting("macro_f1", "Validation metric for early stopping, the best checkpoint and the finetune "
                                       "guard; 'loss': the lowest validation cross-entropy.",
                           choices=(*METRICS, "loss"))
    """With soft targets 'loss' is the cross-entropy to the vote fractions."""
    seed: int = setting(0, "Seed of training (initialisation, shuffling, augmentation).", at_least=0,
                        at_most=MAX_SEED)
    progress: bool = setting(True, "A progress bar when the output is a terminal; elsewhere, or when false, one "
                                   "plain line per epoch instead.")
    epoch_lines: bool = setting(True, "The plain line per epoch (losses, validation metrics, seconds, time left) "
                                      "where no progress bar shows; false: none.")
    logger: str = setting("csv", "Training curves: 'csv' (logs/<stage>/metrics.csv), 'tensorboard' (beside it, in "
                                 "logs/tensorboard/) or 'wandb' (offline unless WANDB_MODE is set).",
                          choices=LOGGERS)
    """The CSV logs are always written: metrics.csv and the report are made from them."""
    channels_last: bool = setting(True, "Train conv nets in the channels-last memory layout (about 1.3x faster on "
                                        "CPUs).")


@dataclass
class Config:
    data: DataConfig = setting(help="Where the images are, their labels and splits, and how they become tensors.",
                               factory=DataConfig)
    model: ModelConfig = setting(help="The pretrained network.", factory=ModelConfig)
    transfer: TransferConfig = setting(help="Stage 1: the head alone, on the frozen backbone's features.",
                                       factory=TransferConfig)
    finetune: FinetuneConfig = setting(help="Stage 2: the network trained on images.", factory=FinetuneConfig)
    decision: DecisionConfig = setting(help="Stage 3: a temperature and per-class logit offsets tuned on "
                                            "validation.", factory=DecisionConfig)
    trainer: TrainerConfig = setting(help="Lightning's Trainer, and how training reports itself.",
                                     factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def get(self, key: str) -> Any:
        """The value of a dotted key, e.g. ``cfg.get("finetune.lr")``."""
        node: Any = self
        for part in key.split("."):
            node = getattr(node, part)
        return node

    def validate(self) -> None:
        """Every setting against what its declaration allows, then the rules that tie settings together."""
        for item in settings(self):
            _check(item, self)
        _validate_data_sources(self.data)


@dataclass(frozen=True)
class Setting:
    """One declared setting (or a section of them) and its value in a config."""

    key: str
    value: Any
    hint: Any
    meta: Any
    section: bool = False

    @property
    def help(self) -> str:
        return self.meta.get("help", "")

    @property
    def allowed(self) -> str:
        """What the setting accepts, in words: its choices, its range, or its check's description."""
        m = self.meta
        if m.get("choices") is not None:
            return " | ".join(_plain(c) for c in m["choices"])
        if m.get("low") is not None or m.get("high") is not None:
            return f"{'integer' if self.hint is int else 'number'}, {_range_words(m)}"
        if m.get("allowed"):
            return m["allowed"]
        return {bool: "true | false", str: "text", int: "integer", float: "number"}.get(self.hint, "")


def settings(config: Config | None = None, sections: bool = False) -> list[Setting]:
    """Every setting in declaration order, with its value in ``config`` (default: the defaults);
    with ``sections``, also an entry for each section before its settings."""
    out: list[Setting] = []

    def walk(node: Any, prefix: str) -> None:
        hints = get_type_hints(type(node))
        for f in dataclasses.fields(node):
            key, value = f"{prefix}{f.name}", getattr(node, f.name)
            if dataclasses.is_dataclass(hints[f.name]):
                if sections:
                    out.append(Setting(key, value, hints[f.name], f.metadata, section=True))
                walk(value, f"{key}.")
            else:
                out.append(Setting(key, value, hints[f.name], f.metadata))

    walk(config if config is not None else Config(), "")
    return out


def _check(item: Setting, config: Config) -> None:
    key, value, m = item.key, item.value, item.meta
    if m.get("choices") is not None and not any(type(value) is type(c) and value == c for c in m["choices"]):
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(_plain(c) for c in m['choices'])}.")
    if m.get("check") is not None and not m["check"](value):
        raise ConfigError(f"{key}={value!r} must be {m['allowed']}.")
    low, high = (_bound(m.get(side), config) for side in ("low", "high"))
    if low is None and high is None:
        return
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
        raise ConfigError(f"{key}={value!r} must be a finite number, {_range_words(m, config)}.")
    if ((low is not None and (value <= low if m["low_open"] else value < low))
            or (high is not None and (value >= high if m["high_open"] else value > high))):
        raise ConfigError(f"{key}={value} must be {_range_words(m, config)}.")


def _bound(bound: float | str | None, config: Config) -> float | None:
    return config.get(bound) if isinstance(bound, str) else bound


def _range_words(m: Any, config: Config | None = None) -> str:
    def text(bound: float | str) -> str:
        if isinstance(bound, str):
            return bound if config is None else f"{bound} ({_number(config.get(bound))})"
        return _number(bound)

    low, high = m.get("low"), m.get("high")
    if low is not None and high is not None:
        out = {(True, True): " (both excluded)", (True, False): f" ({text(low)} excluded)",
               (False, True): f" ({text(high)} excluded)"}.get((m["low_open"], m["high_open"]), "")
        return f"between {text(low)} and {text(high)}{out}"
    words = []
    if low is not None:
        words.append(f"{'above' if m['low_open'] else 'at least'} {text(low)}")
    if high is not None:
        words.append(f"{'below' if m['high_open'] else 'at most'} {text(high)}")
    return " and ".join(words)


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _yaml_value(value: Any) -> str:
    """``value`` as one line of YAML (flow style), e.g. ``auto``, ``'off'``, ``[0.5, 99.5]``, ``null``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9)
    return text.removesuffix("\n...\n").strip()


def _plain(value: Any) -> str:
    """``value`` as typed in a ``key=value`` override: words bare (YAML 1.1's yes/no/off stay words there)."""
    return value if isinstance(value, str) and value else _yaml_value(value)


def _matching(prefix: str) -> list[Setting]:
    """The settings at or under ``prefix`` (a section, a key, or empty for all)."""
    every = settings(sections=True)
    if not prefix:
        return every
    chosen = [s for s in every if s.key == prefix or s.key.startswith(f"{prefix}.")]
    if not chosen:
        close = difflib.get_close_matches(prefix, [s.key for s in every], n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ConfigError(f"Unknown config key or section '{prefix}'.{hint}")
    return chosen


def describe_settings(prefix: str = "") -> str:
    """Every setting (or those under ``prefix``): its key, default, what it allows and its help."""
    lines = []
    for item in _matching(prefix):
        if item.section:
            lines += ["" if lines else None, f"[{item.key}] {item.help}"]
            continue
        lines += [f"{item.key} = {_plain(item.value)}  ({item.allowed})", f"    {item.help}"]
    return "\n".join(line for line in lines if line is not None)


def defaults_yaml(prefix: str = "") -> str:
    """The defaults as a commented YAML config file that :func:`load_config` reads back."""
    lines = ["# galaxytune settings and their defaults (`galaxytune config` lists them with what they allow).",
             "# Keep the keys you change and pass the file with --config; left-out keys keep their defaults."]
    chosen = _matching(prefix)
    written: set[str] = set()
    for item in chosen:
        parts = item.key.split(".")
        for depth in range(len(parts) - 1):  # parent sections not chosen themselves (a prefix inside one)
            parent = ".".join(parts[: depth + 1])
            if parent not in written:
                written.add(parent)
                lines.append(f"{'  ' * depth}{parts[depth]}:")
        pad = "  " * (len(parts) - 1)
        written.add(item.key)
        if item.section:
            lines += ["" if pad == "" else None, f"{pad}# {item.help}", f"{pad}{parts[-1]}:"]
        else:
            allowed = f"  # {item.allowed}" if item.allowed and item.allowed != "text" else ""
            lines += [f"{pad}# {item.help}", f"{pad}{parts[-1]}: {_yaml_value(item.value)}{allowed}"]
    return "\n".join(line for line in lines if line is not None) + "\n"


def _validate_data_sources(data: DataConfig) -> None:
    """The label settings that depend on each other (each one alone is checked by its declaration)."""
    labels = data.labels
    parse_rules(labels.rules)
    if sum(map(bool, (labels.rules, labels.binary.column, labels.soft))) > 1:
        raise ConfigError("data.labels declares more than one of rules, binary and soft; keep one.")
    if labels.vote_redraws and not labels.rules:
        raise ConfigError("data.labels.vote_redraws re-votes the rules' fractions: it needs data.labels.rules.")
    if labels.vote_redraws and labels.questions == "off":
        raise ConfigError("data.labels.vote_redraws needs the vote counts that data.labels.questions=off leaves "
                          "unread; set data.labels.questions: auto.")
    if labels.binary.min_votes > 0 and not labels.binary.votes:
        raise ConfigError("data.labels.binary.min_votes needs data.labels.binary.votes: the column counting the "
                          "votes on that question (or a sum 'a_count + b_count').")
    if labels.binary.positive == labels.binary.negative:
        raise ConfigError("data.labels.binary.positive and .negative must be two different class names.")


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
    if hint == float | list[float]:
        return [_coerce(v, float, key) for v in value] if isinstance(value, list) else _coerce(value, float, key)
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
