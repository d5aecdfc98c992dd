"""The HTML report of a training run or an evaluation.

One self-contained file: every plot and galaxy thumbnail is embedded as a base64 data URI and the
style sheet is inline, so the report can be mailed or archived alone. The plots are also written
as PNG files under ``plots/``. Both reports share the per-split sections (``_split_sections``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.special import softmax
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from galaxytune.config import load_config
from galaxytune.data.images import read_image
from galaxytune.decision import DecisionRule
from galaxytune.files import write_text
from galaxytune.inference.saved import META, ModelInfo
from galaxytune.models.backbone import stretch_pixels
from galaxytune.report import plots
from galaxytune.report.markup import STYLE, data_uri, esc, note, section, table
from galaxytune.report.summary import (
    data_section,
    describe_input,
    headline,
    model_section,
    read_csv,
    read_json,
    stage_table,
)
from galaxytune.run_folder import RunFolder

STAGES = ("transfer", "finetune", "tta", "decision")
GALLERY_SIZE = 12


def _plot(path: Path, alt: str) -> str:
    return f'<img class="plot" src="{data_uri(path.read_bytes(), "image/png")}" alt="{esc(alt)}">'


def _model_view(path: Path | None, info: ModelInfo) -> str | None:
    """A JPEG data URI of the image as the network took it in: decoded as training decodes it
    (centre crop, FITS stretch, resize to the input size), then the network's own stretch; None
    when it cannot be read."""
    if path is None:
        return None
    try:
        pixels = torch.from_numpy(read_image(path, info.image_size, info.center_crop, info.fits_config))
    except Exception:  # missing file or any decoder failure: the card shows a placeholder instead
        return None
    seen = stretch_pixels(pixels.float() / 255.0, info.stretch, info.stretch_softening)
    image = Image.fromarray((seen * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return data_uri(buffer.getvalue(), "image/jpeg")


def _gallery(title: str, indices: np.ndarray, classes: list[str], y: np.ndarray, probs: np.ndarray,
             paths: list[Path] | None, info: ModelInfo) -> str:
    cards = []
    for i in indices:
        pred = int(probs[i].argmax())
        path = paths[i] if paths is not None else None
        uri = _model_view(path, info)
        image = (f'<img src="{uri}" alt="{esc(path.name)}">' if uri is not None and path is not None
                 else '<div class="missing">no image</div>')
        cards.append(
            f'<div class="card" title="{esc(path or "")}">{image}'
            f"true: <b>{esc(classes[y[i]])}</b><br>predicted: <b>{esc(classes[pred])}</b> "
            f"(p={probs[i, pred]:.3f})<br>p(true)={probs[i, y[i]]:.3f}</div>"
        )
    body = f'<div class="gallery">{"".join(cards)}</div>' if cards else note("None.")
    return f"<h3>{esc(title)}</h3>\n{body}"


def _split_sections(
    out_dir: Path, split: str, classes: list[str], y: np.ndarray, final: tuple[str, np.ndarray],
    before: tuple[str, np.ndarray] | None, calibration: dict[str, np.ndarray], paths: list[Path] | None,
    info: ModelInfo,
) -> list[str]:
    """Confusion matrices, per-class scores, reliability, ROC/PR and the gallery of one split.

    ``final`` is (name, probabilities) of the model as shipped; ``before`` the same without the
    decision rule, shown beside it when the rule was applied. The gallery shows each image as
    the network ``info`` describes took it in.
    """
    plot_dir = RunFolder(out_dir).plots  # an evaluation report's folder is laid out like a run's
    k = len(classes)
    final_name, probs = final
    pred = probs.argmax(axis=1)

    confusion = []
    for tag, (name, p) in ([("before", before)] if before is not None else []) + [("final", final)]:
        cm = confusion_matrix(y, p.argmax(axis=1), labels=range(k))
        path = plots.confusion_matrices(cm, classes, f"{split}: {name}", plot_dir / f"confusion_{tag}.png")
        confusion.append(_plot(path, f"confusion matrix, {name}"))

    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=range(k), zero_division=0)
    bars = plots.per_class_bars(precision, recall, classes, f"{split}: {final_name}", plot_dir / "per_class.png")
    roc_pr = plot_dir / "roc_pr.png"
    aucs, aps = plots.roc_pr_curves(y, probs, classes, f"{split}: {final_name}", roc_pr)
    per_class = table(
        ["class", "support", "precision", "recall", "F1", "ROC AUC", "AP"],
        [[c, support[i], precision[i], recall[i], f1[i], aucs[i], aps[i]] for i, c in enumerate(classes)],
    )
    reliability = plots.reliability_diagrams(y, calibration, plot_dir / "reliability.png")

    confidence = probs.max(axis=1)
    wrong = np.flatnonzero(pred != y)
    mistakes = wrong[np.argsort(-confidence[wrong], kind="stable")][:GALLERY_SIZE]
    uncertain = np.argsort(confidence, kind="stable")[:GALLERY_SIZE]
    shown = note(f"Each image as the network took it in: {describe_input(info)}." if paths is not None
                 else "The image paths were not recorded, so no images are shown.")

    return [
        section(f"Confusion matrices ({split})",
                note("Rows are true classes; the row-normalised matrix shows each class's recall on its diagonal."),
                *confusion),
        section(f"Per-class precision and recall ({split}, {final_name})", per_class,
                _plot(bars, "per-class precision and recall")),
        section(f"Reliability ({split})",
                note("Top-label accuracy against confidence in 15 bins; bars below the diagonal are "
                     "over-confident. ECE is the sample-weighted mean gap."),
                _plot(reliability, "reliability diagrams: " + ", ".join(calibration))),
        section(f"ROC and precision-recall curves ({split}, {final_name}, one-vs-rest)",
                _plot(roc_pr, "ROC and precision-recall curves")),
        section(f"Gallery ({split}, {final_name})", shown,
                _gallery("Most confident mistakes", mistakes, classes, y, probs, paths, info),
                _gallery("Least certain predictions", uncertain, classes, y, probs, paths, info)),
    ]


def _page(out_dir: Path, title: str, sections: list[str]) -> Path:
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body><h1>{esc(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    path = RunFolder(out_dir).report
    write_text(path, page)
    return path


def write_evaluation_report(
    out_dir: Path, classes: list[str], y_true: np.ndarray, probabilities: np.ndarray, paths: list[Path], title: str,
    info: ModelInfo,
) -> Path:
    """The report of ``galaxytune evaluate``: ``probabilities`` already include the decision rule;
    ``info`` describes the model, whose input the gallery shows."""
    out_dir = Path(out_dir)
    y, probs = np.asarray(y_true), np.asarray(probabilities, dtype=np.float64)
    sections = [note(f"{len(y)} labelled images, {len(classes)} classes.")]
    sections += _split_sections(out_dir, "evaluated set", list(classes), y, ("model", probs), None,
                                {"model (with decision rule)": probs}, [Path(p) for p in paths], info)
    return _page(out_dir, title, sections)


def _training_curves(folder: RunFolder, rows: list[dict]) -> str:
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    images = [
        _plot(plots.training_curves([r for r in rows if r["stage"] == s], s, folder.plots / f"curves_{s}.png"),
              f"training curves, {s}")
        for s in stages if s in STAGES  # known names only: they become file names
    ]
    if folder.lr_sweep_plot.is_file():
        images.append(_plot(folder.lr_sweep_plot, "learning-rate sweep before finetuning"))
    return section("Training curves", *(images or [note("No per-epoch metrics were recorded.")]))


def write_run_report(run_dir: Path) -> Path:
    """The report of a ``galaxytune train`` run folder, written to ``run_dir/report.html``.

    Written at the end of training, in the process that trained: the software versions it
    reports are those that ran.
    """
    folder = RunFolder(run_dir)
    info = ModelInfo(**json.loads((folder.models / META).read_text()))
    classes = list(info.classes)
    rule = info.rule
    targets, paths, logits = folder.read_stage_outputs()
    test = {stage: per_split["test"] for stage, per_split in logits.items()}
    stages = [s for s in STAGES if s in logits]
    if not stages:
        raise ValueError(f"{folder.stage_outputs} holds no stage outputs.")
    y = targets["test"]
    trained = [s for s in stages if s != "decision"]
    # The decision stage holds the raw logits of the stage before it; its probabilities come from the rule.
    raw = test[trained[-1]] if trained else test["decision"]
    raw_name, raw_probs = trained[-1] if trained else "raw logits", softmax(raw.astype(np.float64), axis=1)
    before: tuple[str, np.ndarray] | None = None
    if "decision" in stages:
        final = ("decision rule", rule.probabilities(test["decision"]))
        before = (f"{raw_name} (before decision rule)", raw_probs)
        temperature_only = DecisionRule(rule.temperature).probabilities(raw)  # calibrates, keeps the argmax
        calibration = {before[0]: raw_probs, f"temperature only (T={rule.temperature:.2f})": temperature_only,
                       "decision rule (T and offsets)": final[1]}
    else:
        final, calibration = (raw_name, raw_probs), {raw_name: raw_probs}

    cfg = load_config(folder.config) if folder.config.is_file() else None
    stage_log = read_json(folder.stages) or []
    rows = read_csv(folder.stage_table)
    sections = [headline(rows[-1])] if rows else []
    sections.append(note(
        f"{info.architecture} at {info.image_size} px; classes: {', '.join(classes)}; "
        f"stages: {', '.join(stages)}; decision rule: {rule.describe()}."
    ))
    if rows:
        sections.append(stage_table(rows, read_csv(folder.stage_gains), stage_log))
    sections += [data_section(folder, cfg), model_section(cfg, info, stage_log),
                 _training_curves(folder, read_csv(folder.epoch_metrics))]
    sections += _split_sections(folder.path, "test", classes, y, final, before, calibration,
                                [Path(p) for p in paths["test"]], info)
    return _page(folder.path, f"galaxytune run: {folder.path.resolve().name}", sections)
