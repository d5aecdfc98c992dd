"""The staged recipe: transfer -> lightweight finetune -> decision rule, and its run folder.

Each stage starts from the best weights of the stage before. Validation chooses everything
(early stopping, best checkpoint, decision rule); the test split only fills the stage table.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from galaxytune.cache import file_digest, key_of, load_arrays, save_arrays
from galaxytune.config import Config
from galaxytune.data.images import ImageSet, default_workers
from galaxytune.data.prepare import Prepared, disk_cache_folder, prepare
from galaxytune.data.questions import answer_slices
from galaxytune.data.transforms import mirror_permutation
from galaxytune.decision import DecisionRule, cross_entropy, fit_decision_rule
from galaxytune.errors import ConfigError
from galaxytune.evaluation.metrics import expected_calibration_error, score
from galaxytune.evaluation.stage_table import format_table, stage_gains, stage_row, write_table
from galaxytune.files import write_json
from galaxytune.inference.predict import DihedralTTA, run_batches
from galaxytune.inference.saved import ModelInfo, save_model
from galaxytune.models.backbone import GalaxyClassifier, create_classifier
from galaxytune.models.freezing import optimizer_groups, set_trainable
from galaxytune.models.lora import add_lora, merge, save_adapter
from galaxytune.report.html import write_run_report
from galaxytune.run_folder import RunFolder, process_facts
from galaxytune.training.fit import fit, is_main_process
from galaxytune.training.interrupt import RunInterrupted, interruptible
from galaxytune.training.logs import merge_epoch_logs
from galaxytune.training.module import ClassifierModule


@dataclass
class StageOutput:
    name: str
    val_logits: np.ndarray
    test_logits: np.ndarray
    rule: DecisionRule = field(default_factory=DecisionRule)
    seconds: float = 0.0
    epochs: int = 0
    fit_seconds: float = 0.0
    """Wall time of the training epochs (with their validation passes), for time per epoch."""
    trainable_params: int = 0
    adapter_bytes: int | None = None
    """Size on disk of a LoRA adapter and head (the only weights a LoRA run needs to keep)."""
    beat_incoming: bool | None = None
    """Whether the stage beat the one before it on validation (None: nothing came before)."""
    kept_incoming: bool = False
    """The finetune guard kept the incoming weights: this stage's outputs are the previous one's."""
    note: str = ""
    """What the stage decided and why (a guard that kept the incoming weights, TTA chosen or not,
    offsets kept or dropped), for stages.json and the report."""

    @classmethod
    def from_summary(cls, summary: dict, val_logits: np.ndarray, test_logits: np.ndarray) -> StageOutput:
        """The output of a stage kept by an interrupted run (see :meth:`summary`)."""
        per_epoch = summary["seconds_per_epoch"] or 0.0
        fields = ("epochs", "trainable_params", "adapter_bytes", "beat_incoming", "kept_incoming", "note")
        return cls(summary["stage"], val_logits, test_logits, seconds=summary["seconds"],
                   fit_seconds=per_epoch * summary["epochs"], **{k: summary[k] for k in fields})

    def summary(self) -> dict:
        per_epoch = self.fit_seconds / self.epochs if self.epochs else None
        return {
            "stage": self.name, "seconds": round(self.seconds, 2), "epochs": self.epochs,
            "seconds_per_epoch": None if per_epoch is None else round(per_epoch, 2),
            "trainable_params": self.trainable_params, "adapter_bytes": self.adapter_bytes,
            "beat_incoming": self.beat_incoming, "kept_incoming": self.kept_incoming, "note": self.note,
        }


@dataclass
class TrainResult:
    """What ``galaxytune.train`` returns."""

    model: GalaxyClassifier
    rule: DecisionRule
    classes: list[str]
    table: list[dict]
    run_dir: Path
    stages: list[StageOutput]
    data: Prepared
    gains: list[dict] = field(default_factory=list)
    """Paired-bootstrap gain of each stage over the one before, on test."""


def _targets(dataset: ImageSet) -> np.ndarray:
    return dataset.targets.numpy()


def _loader(data, batch_size: int, shuffle: bool, workers: int) -> DataLoader:
    return DataLoader(
        data, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
        persistent_workers=workers > 0, drop_last=shuffle and len(data) > batch_size,
    )


def _inference_device(cfg: Config) -> torch.device:
    """Where features and predictions are computed: the accelerator training uses, if a GPU."""
    use_gpu = torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    return torch.device("cuda" if use_gpu else "cpu")


def _image_workers(cfg: Config, dataset: ImageSet) -> int:
    # Cached images need no decoding: worker processes would only add overhead.
    return 0 if dataset.pixels is not None else default_workers(cfg.data.num_workers)


def run_transfer(cfg: Config, net: GalaxyClassifier, data: Prepared, folder: RunFolder, resume: bool = False
                 ) -> StageOutput:
    """Stage 1: features from the frozen backbone computed once, then the head trained on them."""
    tc = cfg.transfer
    net.to(_inference_device(cfg))
    feats = {split: _features(cfg, net, data, split) for split in data.sets}
    # Seeded here, not only at the start: whether the features came from the disk cache (no data
    # loaders drawing seeds) must not change the numbers.
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    head = nn.Sequential(nn.Dropout(cfg.model.drop_rate), net.head)
    train = TensorDataset(feats["train"], data.sets["train"].fit_targets)
    val = TensorDataset(feats["val"], data.sets["val"].fit_targets)
    module = ClassifierModule(
        head, len(data.classes), [{"params": list(head.parameters()), "lr": tc.lr, "weight_decay": tc.weight_decay}]
    )
    stats = fit(module, _loader(train, tc.batch_size, True, 0), _loader(val, 1024, False, 0),
                folder, "transfer", tc.epochs, tc.patience, cfg.trainer, resume)
    with torch.no_grad():
        head.eval()
        return StageOutput(
            "transfer", head(feats["val"]).numpy(), head(feats["test"]).numpy(), epochs=stats.epochs,
            fit_seconds=stats.seconds, trainable_params=sum(p.numel() for p in head.parameters()),
        )


def _features(cfg: Config, net: GalaxyClassifier, data: Prepared, split: str) -> torch.Tensor:
    """The frozen backbone's pooled features of one split, from the disk cache where an earlier
    run on the same images and weights left them."""
    dataset = data.sets[split]
    folder = disk_cache_folder(cfg.data)
    m = cfg.model
    cacheable = folder is not None and data.cache_key is not None and m.weights != "none"  # random init: seeded
    if cacheable:
        weights = file_digest(Path(m.weights).expanduser()) if m.weights != "hub" else "hub"
        key = key_of("features", data.cache_key, split, [str(p) for p in dataset.paths], m.name, weights, m.kwargs,
                     net.mean.flatten().tolist(), net.std.flatten().tolist(), net.stretch, net.softening)
        entry = load_arrays(folder, "features", key)
        if entry is not None:
            return torch.from_numpy(entry["features"])
    out = run_batches(Features(net), dataset, 128, f"features {split}", _image_workers(cfg, dataset))
    if cacheable:
        save_arrays(folder, "features", key, {"features": out.numpy()})
    return out


class Features(nn.Module):
    """The pooled backbone features of a classifier, as a module for :func:`run_batches`."""

    def __init__(self, net: GalaxyClassifier):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.features(x)


def run_finetune(
    cfg: Config, net: GalaxyClassifier, data: Prepared, folder: RunFolder, incoming: StageOutput | None,
    resume: bool = False,
) -> StageOutput:
    """Stage 2: the network trained on images by ``finetune.method`` (every layer with layer-wise
    LR decay by default; or the top blocks, LoRA adapters, or biases and norms).

    If no finetuned epoch beats the incoming weights on validation, those weights are kept
    (unless ``finetune.guard`` is off): a stage may fail to help, but it must not make the model
    worse than its starting point.
    """
    fc = cfg.finetune
    start_state = {k: v.clone() for k, v in net.state_dict().items()}
    if fc.method == "lora":
        trained = add_lora(net, fc.lora_rank, fc.lora_alpha, fc.lora_dropout)
        groups = [{"params": [p for p in trained.parameters() if p.requires_grad], "lr": fc.lr,
                   "weight_decay": fc.weight_decay}]
    else:
        trained = net
        set_trainable(net, fc.method, fc.top_blocks)
        groups = optimizer_groups(net, fc.lr, fc.weight_decay, fc.layer_decay)
    questions = _question_settings(cfg, net, data, groups)
    total = sum(p.numel() for p in net.parameters())
    n_trainable = sum(p.numel() for g in groups for p in g["params"])
    print(f"finetune ({fc.method}): {n_trainable:,} of {total:,} parameters trainable")
    train_set, val_set = data.sets["train"], data.sets["val"]
    sky = dict(any_angle=fc.rotate == "any", zoom=fc.zoom, shift=fc.shift)
    module = ClassifierModule(
        trained, len(data.classes), groups, warmup_fraction=min(1.0, fc.warmup_epochs / fc.epochs),
        label_smoothing=fc.label_smoothing, augment=fc.augment, batchnorm=fc.batchnorm,
        mirror=mirror_permutation(data.classes, fc.mirror_swap),
        sky=sky if (sky["any_angle"] or fc.zoom or fc.shift) else None,
        questions=questions, channels_last=cfg.trainer.channels_last,
        start_size=fc.start_size, start_epochs=round(fc.start_fraction * fc.epochs),
        class_weights=class_weights(train_set.targets, len(data.classes), fc.class_weights),
    )
    stats = fit(module,
                _loader(train_set, fc.batch_size, True, _image_workers(cfg, train_set)),
                _loader(val_set, 128, False, _image_workers(cfg, val_set)),
                folder, "finetune", fc.epochs, fc.patience, cfg.trainer, resume)
    out = StageOutput("finetune", None, None, epochs=stats.epochs,  # outputs filled in below
                      fit_seconds=stats.seconds, trainable_params=n_trainable)
    net.drop_question_head()
    net.to(_inference_device(cfg))  # Lightning hands the model back on the CPU
    if fc.method == "lora":
        if is_main_process():
            adapter = folder.models / "lora_adapter"
            out.adapter_bytes = save_adapter(trained, adapter)
            print(f"finetune: LoRA adapter and head saved in {adapter} ({out.adapter_bytes / 1e6:.2f} MB)")
        # merge_and_unload folds the adapters into the wrapped network itself and returns that
        # same object, so the caller's ``net`` now holds the merged weights.
        net = merge(trained)
    for p in net.parameters():
        p.requires_grad = True
    val_logits = run_batches(net, val_set, 128, "predict val", _image_workers(cfg, val_set)).numpy()
    if incoming is not None:
        out.beat_incoming = _val_score(val_logits, val_set, cfg) > _val_score(incoming.val_logits, val_set, cfg)
        if not out.beat_incoming and fc.guard:
            out.note = (f"no finetuned epoch beat the {incoming.name} stage on validation: its weights are kept "
                        "(finetune.guard)")
            print(f"finetune: {out.note}.")
            net.load_state_dict(start_state)
            if out.adapter_bytes is not None:  # an adapter of weights the run does not keep would mislead
                shutil.rmtree(folder.models / "lora_adapter")
                out.adapter_bytes = None
            out.val_logits, out.test_logits, out.kept_incoming = incoming.val_logits, incoming.test_logits, True
            return out
    test_logits = run_batches(net, data.sets["test"], 128, "predict test", _image_workers(cfg, data.sets["test"]))
    out.val_logits, out.test_logits = val_logits, test_logits.numpy()
    return out


def class_weights(targets: torch.Tensor, n_classes: int, rule: str) -> torch.Tensor | None:
    """Loss weights per class from the training labels, averaging 1 over the training images."""
    if rule == "none":
        return None
    counts = torch.bincount(targets, minlength=n_classes).float().clamp(min=1)
    weights = counts.sum() / (n_classes * counts)
    if rule == "sqrt":
        weights = weights.sqrt()
    return weights / (weights[targets].mean())


def _question_settings(cfg: Config, net: GalaxyClassifier, data: Prepared, groups: list[dict]) -> dict | None:
    """Give ``net`` a question head when the data carries every answer's votes (and add its
    parameters to ``groups`` at the top LR); the module's ``questions`` argument, or None."""
    fc = cfg.finetune
    if not data.questions or fc.question_weight <= 0 or fc.method == "lora":
        return None
    slices = answer_slices(data.questions)
    net.add_question_head(slices[-1][1])
    groups.append({"params": list(net.question_head.parameters()), "lr": fc.lr, "weight_decay": fc.weight_decay})
    print(f"finetune: a question head learns the votes on {len(slices)} Galaxy Zoo questions "
          f"({fc.question_loss}, weight {fc.question_weight})")
    return {"slices": slices, "loss": fc.question_loss, "weight": fc.question_weight}


def run_tta(cfg: Config, net: GalaxyClassifier, data: Prepared) -> StageOutput:
    """The final network's logits averaged over the 8 rotations and flips (``decision.tta``), so
    that the decision rule is fitted on what TTA predictions will feed it."""
    tta = DihedralTTA(net, mirror_permutation(data.classes, cfg.finetune.mirror_swap))
    val, test = (
        run_batches(tta, data.sets[split], 128, f"TTA {split}", _image_workers(cfg, data.sets[split])).numpy()
        for split in ("val", "test")
    )
    return StageOutput("tta", val, test)


def _val_score(logits: np.ndarray, val_set: ImageSet, cfg: Config) -> float:
    """A stage's validation score as it will reach the user: with ``trainer.monitor=loss`` minus
    the cross-entropy to the targets (the vote fractions, with soft targets); else the metric
    after the decision rule's offsets when those are on, since a stage can rank classes better
    yet set worse priors (both stages compared get the same tuning on the same val images)."""
    y = _targets(val_set)
    if cfg.trainer.monitor == "loss":
        return -cross_entropy(logits, val_set.fit_targets.numpy())
    dc = cfg.decision
    if not (dc.enabled and dc.offsets):
        return score(y, logits.argmax(axis=1), cfg.trainer.monitor)
    rule = fit_decision_rule(logits, y, dc.metric, temperature=False, max_offset=dc.offset_range,
                             rule=dc.offset_rule, seed=cfg.trainer.seed)
    return score(y, rule.adjusted_logits(logits).argmax(axis=1), dc.metric)


def _timed(fn, *args) -> StageOutput:
    start = time.perf_counter()
    out = fn(*args)
    out.seconds = time.perf_counter() - start
    return out


def _resumable(folder: RunFolder, name: str, net: GalaxyClassifier, resume: bool, fn, *args) -> StageOutput:
    """Run stage ``name`` (``fn(*args)``), or, resuming, take it as the interrupted run left it:
    its outputs and the network's weights after it. A finished stage is kept for a later resume."""
    kept = folder.load_stage(name) if resume else None
    if kept is not None:
        summary, logits, weights = kept
        net.load_state_dict(weights)
        print(f"{name}: finished before the interruption, kept")
        return StageOutput.from_summary(summary, logits["val"], logits["test"])
    out = _timed(fn, *args)
    if is_main_process():
        folder.save_stage(out.summary(), {"val": out.val_logits, "test": out.test_logits}, net.state_dict())
    return out


def train(cfg: Config, out_dir: str | Path, overwrite: bool = False, resume: bool = False) -> TrainResult:
    """Run every enabled stage on ``cfg.data.path`` and write the run folder ``out_dir``.

    ``resume`` continues the interrupted run in ``out_dir`` (``cfg`` should then be its own
    ``config.yaml``: see :func:`resume_run`): finished stages are kept and the interrupted one
    continues from its last epoch. SIGINT and SIGTERM raise :class:`RunInterrupted`, after the
    run's state says where it stopped. Under multi-process (DDP) training every process runs
    this function; only the main one writes files.
    """
    if not cfg.transfer.enabled and not (cfg.finetune.enabled and cfg.finetune.method != "head"):
        raise ConfigError("transfer.enabled and finetune.enabled are both off: nothing would be trained.")
    folder = RunFolder(out_dir)
    if not is_main_process():
        return _run(cfg, folder, resume)
    with folder.locked(), interruptible():
        folder.prepare(overwrite, resume)
        if not resume:
            cfg.save(folder.config)
        folder.update_state(status="running", **process_facts())
        try:
            result = _run(cfg, folder, resume)
        except RunInterrupted as exc:
            folder.update_state(status="interrupted")
            exc.where = folder.interruption_note()
            raise
        except BaseException as exc:
            folder.update_state(status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        folder.drop_resume_files()
        folder.update_state(status="done", stage=None, epoch=None)
        return result


def resume_run(out_dir: str | Path) -> TrainResult:
    """Continue the interrupted run in ``out_dir`` with the config it was started with."""
    from galaxytune.config import load_config

    folder = RunFolder(out_dir)
    if not folder.config.is_file():
        raise ConfigError(f"{folder.path} holds no run to resume (no {folder.config.name}).")
    return train(load_config(folder.config), folder.path, resume=True)


def _run(cfg: Config, folder: RunFolder, resume: bool) -> TrainResult:
    main = is_main_process()
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    data = prepare(cfg.data, folder if main else None)
    mirror_permutation(data.classes, cfg.finetune.mirror_swap)  # unknown class names stop the run now
    net = create_classifier(
        cfg.model.name, len(data.classes), cfg.model.weights, cfg.model.mean, cfg.model.std,
        cfg.model.drop_rate, cfg.model.kwargs, cfg.data.stretch, cfg.data.stretch_softening,
    )
    stages: list[StageOutput] = []
    if cfg.transfer.enabled:
        stages.append(_resumable(folder, "transfer", net, resume, run_transfer, cfg, net, data, folder, resume))
    if cfg.finetune.enabled and cfg.finetune.method != "head":
        L.seed_everything(cfg.trainer.seed + 1, workers=True, verbose=False)
        stages.append(_resumable(folder, "finetune", net, resume, run_finetune, cfg, net, data, folder,
                                 stages[-1] if stages else None, resume))
    if cfg.decision.tta:
        tta = _resumable(folder, "tta", net, resume, run_tta, cfg, net, data)
        plain = stages[-1]
        tta.beat_incoming = _val_score(tta.val_logits, data.sets["val"], cfg) > _val_score(
            plain.val_logits, data.sets["val"], cfg)
        verdict = "beat" if tta.beat_incoming else "did not beat"
        if cfg.decision.tta is True or tta.beat_incoming:
            tta.note = f"the mean of 8 rotated and flipped views {verdict} the plain logits on validation; used"
            stages.append(tta)
        else:
            unused = "TTA (8 rotated and flipped views) did not beat the plain logits on validation; not used"
            plain.note = "; ".join(filter(None, (plain.note, unused)))  # after the finetune guard's note, if any
            print(f"{plain.name}: {unused}.")
    y_val, y_test = _targets(data.sets["val"]), _targets(data.sets["test"])
    soft = data.sets["val"].soft
    fractions = None if soft is None else (soft.numpy(), data.sets["test"].soft.numpy())
    rule = DecisionRule()
    if cfg.decision.enabled:
        start = time.perf_counter()
        last = stages[-1]
        dc = cfg.decision
        rule = fit_decision_rule(last.val_logits, y_val, dc.metric, dc.temperature, dc.offsets, dc.offset_range,
                                 dc.offset_rule, cfg.trainer.seed, None if fractions is None else fractions[0],
                                 dc.max_accuracy_drop)
        stages.append(StageOutput("decision", last.val_logits, last.test_logits, rule, time.perf_counter() - start,
                                  note=rule.check.describe() if rule.check else ""))
    val_probs = [s.rule.probabilities(s.val_logits) for s in stages]
    test_probs = [s.rule.probabilities(s.test_logits) for s in stages]
    table = [
        stage_row(s.name, vp, tp, y_val, y_test, s.seconds, seed=cfg.trainer.seed, fractions=fractions)
        for s, vp, tp in zip(stages, val_probs, test_probs)
    ]
    if cfg.decision.enabled:
        table[-1]["rule"] = _rule_note(stages[-1], y_val, y_test)
    gains = stage_gains([s.name for s in stages], test_probs, y_test, seed=cfg.trainer.seed)
    if main:
        write_outputs(folder, cfg, net, data, stages, table, gains)
    return TrainResult(net, rule, data.classes, table, folder.path, stages, data, gains)


def _rule_note(decision: StageOutput, y_val: np.ndarray, y_test: np.ndarray) -> str:
    """The rule, and the ECE after its temperature alone: the decision row's ECE includes the
    offsets, which trade calibration for the chosen metric."""
    scaled = DecisionRule(decision.rule.temperature)
    val, test = (expected_calibration_error(y, scaled.probabilities(logits))
                 for y, logits in ((y_val, decision.val_logits), (y_test, decision.test_logits)))
    check = f"; {decision.rule.check.describe()}" if decision.rule.check else ""
    return (f"decision rule: {decision.rule.describe()}{check}; ECE after the temperature alone: "
            f"val {val:.4f}, test {test:.4f}")


def write_outputs(
    folder: RunFolder, cfg: Config, net: GalaxyClassifier, data: Prepared, stages: list[StageOutput],
    table: list[dict], gains: list[dict],
) -> None:
    """The saved model, stage table, per-epoch metrics, stage outputs and the report."""
    info = ModelInfo(
        architecture=cfg.model.name, classes=data.classes, image_size=cfg.data.image_size,
        center_crop=cfg.data.center_crop, mean=net.mean.flatten().tolist(), std=net.std.flatten().tolist(),
        decision=stages[-1].rule.to_dict(), create_kwargs=cfg.model.kwargs,
        mirror_swap=cfg.finetune.mirror_swap, tta=any(s.name == "tta" for s in stages), fits=asdict(cfg.data.fits),
        stretch=cfg.data.stretch, stretch_softening=cfg.data.stretch_softening,
    )
    save_model(net, info, folder.models)
    write_table(table, gains, folder)
    write_json(folder.stages, [s.summary() for s in stages])
    merge_epoch_logs(folder)
    folder.write_stage_outputs(
        {split: _targets(data.sets[split]) for split in ("val", "test")},
        {split: data.sets[split].paths for split in ("val", "test")},
        {s.name: {"val": s.val_logits, "test": s.test_logits} for s in stages},
    )
    print(format_table(table, gains))
    print(f"Report: {write_run_report(folder.path)}")
