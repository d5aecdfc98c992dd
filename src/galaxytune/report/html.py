"""The HTML report of a training run or an evaluation.

One self-contained file: every plot and galaxy thumbnail is embedded as a base64 data URI and the
style sheet is inline, so the report can be mailed or archived alone. The plots are also written
as PNG files under ``plots/``. Both reports share the per-split sections (``_split_sections``).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.special import softmax
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from galaxytune.decision import DecisionRule
from galaxytune.files import write_text
from galaxytune.report import plots

STAGES = ("transfer", "finetune", "tta", "decision")
GALLERY_SIZE = 12
THUMBNAIL_PX = 128

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f2f2f2; }
img.plot { max-width: 100%; display: block; margin: .5em 0 1.5em; }
.note { color: #555; font-size: .92em; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: .8em; }
.card { border: 1px solid #ddd; border-radius: 4px; padding: .4em; font-size: .8em; overflow-wrap: anywhere; }
.card img, .card .missing { width: 128px; height: 128px; display: block; margin: 0 auto .3em; }
.card .missing { background: #eee; color: #888; text-align: center; line-height: 128px; }
"""


def _esc(value: object) -> str:
    return html.escape(str(value))


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _plot(path: Path, alt: str) -> str:
    return f'<img class="plot" src="{_data_uri(path.read_bytes(), "image/png")}" alt="{_esc(alt)}">'


def _thumbnail(path: Path | None) -> str | None:
    """A small JPEG data URI of the image, or None when it cannot be read."""
    if path is None:
        return None
    try:
        with Image.open(path) as image:
            image.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))  # JPEG: decode at reduced size, much faster
            thumb = image.convert("RGB")
            thumb.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buffer = io.BytesIO()
        thumb.save(buffer, format="JPEG", quality=85)
    except Exception:  # missing file or any decoder failure: the card shows a placeholder instead
        return None
    return _data_uri(buffer.getvalue(), "image/jpeg")


def _fmt(value: object) -> str:
    """Cells: integers as they are, floats to 4 decimals, NaN as '-', text escaped."""
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return "-" if np.isnan(value) else f"{value:.4f}"
    return _esc(value)


def _number(text: str | None) -> object:
    """A stage-table CSV cell as int or float, so that it is formatted like the other tables."""
    if text in (None, ""):
        return "-"
    return int(text) if text.lstrip("-").isdigit() else float(text)


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{_esc(title)}</h2>\n" + "\n".join(parts) + "\n</section>"


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _gallery(title: str, indices: np.ndarray, classes: list[str], y: np.ndarray, probs: np.ndarray,
             paths: list[Path] | None) -> str:
    cards = []
    for i in indices:
        pred = int(probs[i].argmax())
        path = paths[i] if paths is not None else None
        uri = _thumbnail(path)
        image = (f'<img src="{uri}" alt="{_esc(path.name)}">' if uri is not None and path is not None
                 else '<div class="missing">no image</div>')
        cards.append(
            f'<div class="card" title="{_esc(path or "")}">{image}'
            f"true: <b>{_esc(classes[y[i]])}</b><br>predicted: <b>{_esc(classes[pred])}</b> "
            f"(p={probs[i, pred]:.3f})<br>p(true)={probs[i, y[i]]:.3f}</div>"
        )
    body = f'<div class="gallery">{"".join(cards)}</div>' if cards else _note("None.")
    return f"<h3>{_esc(title)}</h3>\n{body}"


def _split_sections(
    out_dir: Path, split: str, classes: list[str], y: np.ndarray, final: tuple[str, np.ndarray],
    before: tuple[str, np.ndarray] | None, calibration: dict[str, np.ndarray], paths: list[Path] | None,
) -> list[str]:
    """Confusion matrices, per-class scores, reliability, ROC/PR and the gallery of one split.

    ``final`` is (name, probabilities) of the model as shipped; ``before`` the same without the
    decision rule, shown beside it when the rule was applied.
    """
    plot_dir = out_dir / "plots"
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
    per_class = _table(
        ["class", "support", "precision", "recall", "F1", "ROC AUC", "AP"],
        [[c, support[i], precision[i], recall[i], f1[i], aucs[i], aps[i]] for i, c in enumerate(classes)],
    )
    reliability = plots.reliability_diagrams(y, calibration, plot_dir / "reliability.png")

    confidence = probs.max(axis=1)
    wrong = np.flatnonzero(pred != y)
    mistakes = wrong[np.argsort(-confidence[wrong], kind="stable")][:GALLERY_SIZE]
    uncertain = np.argsort(confidence, kind="stable")[:GALLERY_SIZE]
    missing = "" if paths is not None else _note("The image paths were not recorded, so no images are shown.")

    return [
        _section(f"Confusion matrices ({split})",
                 _note("Rows are true classes; the row-normalised matrix shows each class's recall on its diagonal."),
                 *confusion),
        _section(f"Per-class precision and recall ({split}, {final_name})", per_class,
                 _plot(bars, "per-class precision and recall")),
        _section(f"Reliability ({split})",
                 _note("Top-label accuracy against confidence in 15 bins; bars below the diagonal are "
                       "over-confident. ECE is the sample-weighted mean gap."),
                 _plot(reliability, "reliability diagrams: " + ", ".join(calibration))),
        _section(f"ROC and precision-recall curves ({split}, {final_name}, one-vs-rest)",
                 _plot(roc_pr, "ROC and precision-recall curves")),
        _section(f"Gallery ({split}, {final_name})", missing,
                 _gallery("Most confident mistakes", mistakes, classes, y, probs, paths),
                 _gallery("Least certain predictions", uncertain, classes, y, probs, paths)),
    ]


def _page(out_dir: Path, title: str, sections: list[str]) -> Path:
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body><h1>{_esc(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    path = out_dir / "report.html"
    write_text(path, page)
    return path


def write_evaluation_report(
    out_dir: Path, classes: list[str], y_true: np.ndarray, probabilities: np.ndarray, paths: list[Path], title: str
) -> Path:
    """The report of ``galaxytune evaluate``: ``probabilities`` already include the decision rule."""
    out_dir = Path(out_dir)
    y, probs = np.asarray(y_true), np.asarray(probabilities, dtype=np.float64)
    sections = [_note(f"{len(y)} labelled images, {len(classes)} classes.")]
    sections += _split_sections(out_dir, "evaluated set", list(classes), y, ("model", probs), None,
                                {"model (with decision rule)": probs}, [Path(p) for p in paths])
    return _page(out_dir, title, sections)


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _with_interval(row: dict, key: str) -> object:
    """A test metric with its 95% bootstrap interval, where the table has one."""
    value = _number(row.get(key))
    if isinstance(value, float) and row.get(f"{key}_ci_low"):
        return f"{value:.4f} [{float(row[key + '_ci_low']):.3f}, {float(row[key + '_ci_high']):.3f}]"
    return value


def _stage_table(rows: list[dict], gains: list[dict]) -> str:
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "ece", "n")
    header = ["stage"] + [f"{split} {k.replace('_', ' ')}" for split in ("val", "test") for k in keys] + ["seconds"]
    body = [[r["stage"]] + [_with_interval(r, f"{s}_{k}") for s in ("val", "test") for k in keys]
            + [f"{float(r['seconds']):.1f}" if r.get("seconds") else "-"] for r in rows]
    parts = [
        _table(header, body),
        _note("Validation chose the checkpoints, early stopping and the decision rule; the test split is "
              "reported only and never used for a choice. Brackets: 95% bootstrap interval over test images."),
    ]
    if gains:
        parts.append(_table(
            ["stage", "versus", "metric", "gain on test", "95% interval", "P(no gain)"],
            [[g["stage"], g["versus"], g["metric"].replace("_", " "), f"{float(g['delta']):+.4f}",
              f"[{float(g['ci_low']):+.3f}, {float(g['ci_high']):+.3f}]", _number(g["p_not_better"])] for g in gains],
        ))
        parts.append(_note("Paired bootstrap: both stages are scored on the same resampled test images; "
                           "P(no gain) is the share of resamples in which the later stage does not beat the earlier."))
    return _section("Stage table", *parts)


def _training_curves(run_dir: Path, rows: list[dict]) -> str:
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    images = [
        _plot(plots.training_curves([r for r in rows if r["stage"] == s], s, run_dir / "plots" / f"curves_{s}.png"),
              f"training curves, {s}")
        for s in stages if s in STAGES  # known names only: they become file names
    ]
    return _section("Training curves", *(images or [_note("No per-epoch metrics were recorded.")]))


def _decisions(path: Path) -> str:
    """What the run's guards decided, stage by stage (stages.json), so that a stage row equal to
    the one before, or a rule without offsets, is explained where it is shown."""
    if not path.is_file():
        return ""
    notes = [(s["stage"], s["note"]) for s in json.loads(path.read_text()) if s.get("note")]
    if not notes:
        return ""
    items = "".join(f"<li><b>{_esc(stage)}</b>: {_esc(note)}</li>" for stage, note in notes)
    return _section("What the run decided", f"<ul>{items}</ul>")


def write_run_report(run_dir: Path) -> Path:
    """The report of a ``galaxytune train`` run folder, written to ``run_dir/report.html``."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "models" / "model.json").read_text())
    classes = list(info["classes"])
    rule = DecisionRule(**info.get("decision", {}))
    with np.load(run_dir / "stage_outputs.npz") as npz:
        outputs = {key: npz[key] for key in npz.files}
    stages = [s for s in STAGES if f"{s}_test" in outputs]
    if not stages:
        raise ValueError(f"{run_dir / 'stage_outputs.npz'} holds no stage outputs.")
    y = outputs["y_test"]
    trained = [s for s in stages if s != "decision"]
    # The decision stage holds the raw logits of the stage before it; its probabilities come from the rule.
    raw = outputs[f"{trained[-1]}_test"] if trained else outputs["decision_test"]
    raw_name, raw_probs = trained[-1] if trained else "raw logits", softmax(raw.astype(np.float64), axis=1)
    before: tuple[str, np.ndarray] | None = None
    if "decision" in stages:
        final = ("decision rule", rule.probabilities(outputs["decision_test"]))
        before = (f"{raw_name} (before decision rule)", raw_probs)
        temperature_only = DecisionRule(rule.temperature).probabilities(raw)  # calibrates, keeps the argmax
        calibration = {before[0]: raw_probs, f"temperature only (T={rule.temperature:.2f})": temperature_only,
                       "decision rule (T and offsets)": final[1]}
    else:
        final, calibration = (raw_name, raw_probs), {raw_name: raw_probs}

    summary = _note(
        f"{info.get('architecture', '?')} at {info.get('image_size', '?')} px; classes: {', '.join(classes)}; "
        f"stages: {', '.join(stages)}; decision rule: {rule.describe()}."
    )
    sections = [summary]
    table = _read_csv(run_dir / "stage_table.csv")
    if table:
        sections.append(_stage_table(table, _read_csv(run_dir / "stage_gains.csv")))
    decided = _decisions(run_dir / "stages.json")
    if decided:
        sections.append(decided)
    sections.append(_training_curves(run_dir, _read_csv(run_dir / "metrics.csv")))
    sections += _split_sections(run_dir, "test", classes, y, final, before, calibration,
                                [Path(p) for p in outputs["test_paths"]])
    return _page(run_dir, f"galaxytune run: {run_dir.resolve().name}", sections)
