"""What a finished run writes: the stage table and gains, the saved model, per-epoch metrics,
each stage's outputs and the report."""

from __future__ import annotations

import logging
from dataclasses import asdict

import numpy as np

from galaxytune.config import Config
from galaxytune.data.prepare import Prepared
from galaxytune.decision import DecisionRule
from galaxytune.evaluation.metrics import expected_calibration_error
from galaxytune.evaluation.stage_table import format_table, stage_gains, stage_row, write_table
from galaxytune.files import write_json
from galaxytune.inference.saved import ModelInfo, save_model
from galaxytune.models.backbone import GalaxyClassifier, source_model_args
from galaxytune.report.html import write_run_report
from galaxytune.run_folder import RunFolder
from galaxytune.training.logs import merge_epoch_logs
from galaxytune.training.stages import StageOutput

log = logging.getLogger(__name__)


def _targets(data: Prepared, split: str) -> np.ndarray:
    return data.sets[split].targets.numpy()


def stage_table(cfg: Config, data: Prepared, stages: list[StageOutput]) -> tuple[list[dict], list[dict]]:
    """The stage table (each stage's metrics on val and test) and each stage's gain over the one before."""
    y_val, y_test = _targets(data, "val"), _targets(data, "test")
    soft = data.sets["val"].soft
    fractions = None if soft is None else (soft.numpy(), data.sets["test"].soft.numpy())
    val_probs = [s.rule.probabilities(s.val_logits) for s in stages]
    test_probs = [s.rule.probabilities(s.test_logits) for s in stages]
    table = [
        stage_row(s.name, vp, tp, y_val, y_test, s.seconds, seed=cfg.trainer.seed, fractions=fractions)
        for s, vp, tp in zip(stages, val_probs, test_probs)
    ]
    if stages[-1].name == "decision":
        table[-1]["rule"] = _rule_note(stages[-1], y_val, y_test)
    gains = stage_gains([s.name for s in stages], test_probs, y_test, seed=cfg.trainer.seed)
    return table, gains


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
        # The registry name (convnext_nano for a hf-hub: or local-dir: name) and the repo's
        # model_args: the saved model is rebuilt from them without the Hub repo or the folder.
        architecture=net.backbone.pretrained_cfg.get("architecture", cfg.model.name), classes=data.classes,
        image_size=cfg.data.image_size,
        center_crop=cfg.data.center_crop, mean=net.mean.flatten().tolist(), std=net.std.flatten().tolist(),
        decision=stages[-1].rule.to_dict(),
        create_kwargs={**source_model_args(cfg.model.name), **cfg.model.kwargs},
        mirror_swap=cfg.finetune.mirror_swap, tta=any(s.name == "tta" for s in stages), fits=asdict(cfg.data.fits),
        stretch=cfg.data.stretch, stretch_softening=cfg.data.stretch_softening,
    )
    save_model(net, info, folder.models)
    write_table(table, gains, folder)
    write_json(folder.stages, [s.summary() for s in stages])
    merge_epoch_logs(folder)
    folder.write_stage_outputs(
        {split: _targets(data, split) for split in ("val", "test")},
        {split: data.sets[split].paths for split in ("val", "test")},
        {s.name: {"val": s.val_logits, "test": s.test_logits} for s in stages},
    )
    log.info(format_table(table, gains))
    log.info(f"Report: {write_run_report(folder.path)}")
