"""The staged recipe: transfer -> lightweight finetune -> TTA -> decision rule, and its run folder.

Each stage (:mod:`galaxytune.training.stages`) starts from the network and outputs of the stage
before. Validation chooses everything (early stopping, best checkpoint, decision rule); the test
split only fills the stage table.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L

from galaxytune.config import Config
from galaxytune.console import ensure_console_logging
from galaxytune.data.prepare import Prepared, prepare
from galaxytune.data.transforms import mirror_permutation
from galaxytune.decision import DecisionRule
from galaxytune.errors import ConfigError
from galaxytune.models.backbone import GalaxyClassifier, create_classifier, drop_path_is_idle
from galaxytune.run_folder import RunFolder, process_facts
from galaxytune.training.devices import inference_device, place
from galaxytune.training.features import Features
from galaxytune.training.interrupt import RunInterrupted, interruptible
from galaxytune.training.outputs import stage_table, write_outputs
from galaxytune.training.processes import is_main_process, main_process_first, start_processes
from galaxytune.training.stages import STAGES, RunContext, Stage, StageOutput, StageResult, class_weights

__all__ = [
    "Features", "StageOutput", "TrainResult", "class_weights", "resume_run", "run_stages", "train", "write_outputs",
]

log = logging.getLogger(__name__)


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


def _timed(stage: Stage, run: RunContext, net: GalaxyClassifier, data: Prepared, incoming: StageOutput | None
           ) -> StageResult:
    start = time.perf_counter()
    result = stage.run(run, net, data, incoming)
    result.output.seconds = time.perf_counter() - start
    return result


def _resumable(stage: Stage, run: RunContext, net: GalaxyClassifier, data: Prepared, incoming: StageOutput | None
               ) -> StageResult:
    """Run ``stage``, or, resuming, take it as the interrupted run left it: its outputs and the
    network's weights after it. A finished stage is kept for a later resume."""
    kept = run.folder.load_stage(stage.name) if run.resume and stage.resumable else None
    if kept is not None:
        summary, logits, weights = kept
        net.load_state_dict(weights)  # the recipe's own network, not yet handed to any stage
        log.info(f"{stage.name}: finished before the interruption, kept")
        return StageResult(net, StageOutput.from_summary(summary, logits["val"], logits["test"]))
    result = _timed(stage, run, net, data, incoming)
    if stage.resumable and is_main_process():
        out = result.output
        run.folder.save_stage(out.record(), {"val": out.val_logits, "test": out.test_logits},
                              result.net.state_dict())
    return result


def train(cfg: Config, out_dir: str | Path, overwrite: bool = False, resume: bool = False) -> TrainResult:
    """Run every enabled stage on ``cfg.data.path`` and write the run folder ``out_dir``.

    ``resume`` continues the interrupted run in ``out_dir`` (``cfg`` should then be its own
    ``config.yaml``: see :func:`resume_run`): finished stages are kept and the interrupted one
    continues from its last epoch. SIGINT and SIGTERM raise :class:`RunInterrupted`, after the
    run's state says where it stopped. Under multi-process (DDP) training every process runs
    this function; only the main one writes files.
    """
    if not cfg.transfer.enabled and not cfg.finetune.runs:
        raise ConfigError("transfer.enabled and finetune.enabled are both off: nothing would be trained.")
    ensure_console_logging()
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
    start_processes(cfg.trainer)  # from here on, every stage can share its work among them
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    with main_process_first():  # the others then read the decoded images from the disk cache
        data = prepare(cfg.data, folder if main else None)
    mirror_permutation(data.classes, cfg.finetune.mirror_swap)  # unknown class names stop the run now
    net = create_classifier(
        cfg.model.name, len(data.classes), cfg.model.weights, cfg.model.mean, cfg.model.std,
        cfg.model.drop_rate, cfg.model.kwargs, cfg.data.stretch, cfg.data.stretch_softening,
    )
    if main and drop_path_is_idle(net.backbone):
        log.warning(f"Warning: model.kwargs.drop_path_rate does nothing on {cfg.model.name}: none of its blocks "
                    "has a skip connection to drop. Use a residual network (e.g. mobilenetv2_100) or leave it out.")
    run = RunContext(cfg, folder, resume, inference_device(cfg.trainer))
    net, stages = run_stages(run, place(net, run.device), data)
    table, gains = stage_table(cfg, data, stages)
    if main:
        write_outputs(folder, cfg, net, data, stages, table, gains)
    return TrainResult(net, stages[-1].rule, data.classes, table, folder.path, stages, data, gains)


def run_stages(run: RunContext, net: GalaxyClassifier, data: Prepared) -> tuple[GalaxyClassifier, list[StageOutput]]:
    """The recipe: every enabled stage in turn, each from the network and output of the one before.

    A stage whose outputs are not used (TTA that lost on validation) adds no row; its note goes to
    the stage whose outputs stand."""
    stages: list[StageOutput] = []
    for stage in STAGES:
        if not stage.enabled(run.cfg):
            continue
        if stage.seed_offset is not None:
            L.seed_everything(run.cfg.trainer.seed + stage.seed_offset, workers=True, verbose=False)
        result = _resumable(stage, run, net, data, stages[-1] if stages else None)
        net, out = result.net, result.output
        if out.used:
            stages.append(out)
        else:  # after the finetune guard's note, if any
            stages[-1] = replace(stages[-1], note="; ".join(filter(None, (stages[-1].note, out.note))))
    return net, stages
