"""The run report's account of the run: the headline, the stage table with what the guards kept,
the data (class counts, the leakage guard's findings), and the model and software behind it.

Everything is read from the run folder: ``stage_table.csv``, ``stage_gains.csv``, ``stages.json``,
``config.yaml``, ``splits.csv``, ``leakage.json``, ``leakage.csv`` and ``unreadable_images.csv``.
"""

from __future__ import annotations

import csv
import importlib
import json
import platform
from collections import Counter
from datetime import datetime
from pathlib import Path

from galaxytune.config import Config
from galaxytune.data.leakage import describe
from galaxytune.evaluation.metrics import METRIC_NAMES
from galaxytune.inference.saved import ModelInfo
from galaxytune.report.markup import esc, fmt, note, number, section, table
from galaxytune.run_folder import RunFolder

LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1", "ece": "ECE",
          "n": "n"}
PACKAGES = ("galaxytune", "torch", "timm", "lightning", "numpy")
LEAKAGE_ROWS = 20
"""Duplicates listed in the report; leakage.csv lists them all."""


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def read_json(path: Path) -> object:
    return json.loads(path.read_text()) if path.is_file() else None


def _interval(row: dict, key: str) -> str:
    """A metric cell: the value, and below it the 95% bootstrap interval where the table has one."""
    text = fmt(number(row.get(key)))
    if row.get(f"{key}_ci_low"):
        text += f'<span class="ci">[{float(row[key + "_ci_low"]):.3f}, {float(row[key + "_ci_high"]):.3f}]</span>'
    return text


def headline(row: dict) -> str:
    """The final stage's test metrics, each with its 95% interval."""
    cards = "".join(
        f'<div class="metric"><div class="name">{esc(LABELS[key])}</div>'
        f'<div class="value">{_interval(row, "test_" + key)}</div></div>' for key in METRIC_NAMES
    )
    lead = (f"The final model (stage <b>{esc(row['stage'])}</b>) on <b>{esc(row.get('test_n', '?'))}</b> test "
            "images, never used for a choice; below each figure its 95% bootstrap interval.")
    return f'<section id="headline"><p>{lead}</p><div class="headline">{cards}</div></section>'


def _kept(stages: list[dict]) -> dict[str, str]:
    """Each stage whose guard kept the stage before it (stages.json), and that stage."""
    return {s["stage"]: before["stage"] for before, s in zip(stages, stages[1:]) if s.get("kept_incoming")}


def _decisions(stages: list[dict]) -> list[str]:
    """A sentence per stage whose guard kept the stage before it or made a choice."""
    sentences, kept = [], _kept(stages)
    for stage in stages:
        name, text = stage["stage"], stage.get("note", "")
        if name in kept:
            why = f": {esc(text)}" if text else ", its guard kept those weights"
            sentences.append(f"The <b>{esc(name)}</b> row repeats the <b>{esc(kept[name])}</b> row{why}.")
        elif text:
            sentences.append(f"<b>{esc(name)}</b>: {esc(text)}.")
    return sentences


def stage_table(rows: list[dict], gains: list[dict], stages: list[dict]) -> str:
    """The stage table, the sentences that explain its rows (``stages``: stages.json), and the gains."""
    keys = (*METRIC_NAMES, "n")
    metric_heads = "".join(f"<th>{esc(LABELS[k])}</th>" for k in keys) * 2
    head = (f'<thead><tr><th rowspan="2">stage</th><th colspan="{len(keys)}">validation</th>'
            f'<th colspan="{len(keys)}">test, with 95% interval</th><th rowspan="2">seconds</th></tr>'
            f"<tr>{metric_heads}</tr></thead>")
    kept = _kept(stages)
    body = ""
    for r in rows:
        stage = esc(r["stage"]) + (f' <span class="kept">= {esc(kept[r["stage"]])}</span>' if r["stage"] in kept
                                   else "")
        cells = [stage] + [_interval(r, f"{split}_{k}") for split in ("val", "test") for k in keys]
        cells.append(f"{float(r['seconds']):.1f}" if r.get("seconds") else "-")
        body += "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    parts = [f'<div class="scroll"><table class="stages">{head}<tbody>{body}</tbody></table></div>']
    decided = _decisions(stages)
    if decided:
        parts.append('<ul class="decisions">' + "".join(f"<li>{s}</li>" for s in decided) + "</ul>")
    parts.append(note("Validation chose the checkpoints, early stopping and the decision rule; the test split is "
                      "reported only and never used for a choice. Below each test figure: its 95% bootstrap "
                      "interval over test images."))
    if gains:
        parts.append(table(
            ["stage", "versus", "metric", "gain on test", "95% interval", "P(no gain)"],
            [[g["stage"], g["versus"], g["metric"].replace("_", " "), f"{float(g['delta']):+.4f}",
              f"[{float(g['ci_low']):+.3f}, {float(g['ci_high']):+.3f}]", number(g["p_not_better"])] for g in gains],
        ))
        parts.append(note("Paired bootstrap: both stages are scored on the same resampled test images; "
                          "P(no gain) is the share of resamples in which the later stage does not beat the earlier."))
    return section("Stage table", *parts, anchor="stage-table")


def _class_counts(splits: list[dict]) -> str:
    counts = Counter((r["label"], r["split"]) for r in splits)
    names = ("train", "val", "test")
    rows = [[c, *(counts[c, s] for s in names), sum(counts[c, s] for s in names)]
            for c in sorted({r["label"] for r in splits})]
    per_split = Counter(r["split"] for r in splits)
    rows.append(["all", *(per_split[s] for s in names), len(splits)])
    return table(["class", *names, "all"], rows)


def _leakage(folder: RunFolder, cfg: Config | None) -> str:
    if cfg is not None and cfg.data.leakage == "off":
        return note("The leakage guard was off (data.leakage: off): val and test were not compared with train.")
    summary = read_json(folder.leakage_summary)
    if summary is None:
        return note("The leakage guard's findings were not recorded (no leakage.json).")
    parts = [f"<p>{esc(describe(summary))}.</p>"]
    found = read_csv(folder.leakage)
    if found:
        parts.append(table(
            ["split", "image", "also in", "as", "hash distance", "pixel difference"],
            [[r["split"], r["path"], f"{r['other_split']}: {r['other_path']}", r["kind"], number(r["hash_distance"]),
              r.get("pixel_difference", "-")] for r in found[:LEAKAGE_ROWS]], text=True,
        ))
        more = f" (the first {LEAKAGE_ROWS} are shown)" if len(found) > LEAKAGE_ROWS else ""
        parts.append(note(f"All {len(found)} are listed in leakage.csv{more}. A duplicate inflates the test figures; "
                          "remove them and train again."))
    return "\n".join(parts)


def data_section(folder: RunFolder, cfg: Config | None) -> str:
    """Where the images came from, how many of each class went to each split, and the leakage guard."""
    parts = [f"<p>Source: <code>{esc(cfg.data.path)}</code></p>" if cfg is not None
             else note("No config.yaml: the data source was not recorded.")]
    splits = read_csv(folder.splits)
    if splits:
        parts.append(_class_counts(splits))
    unreadable = read_csv(folder.unreadable)
    if unreadable:
        parts.append(note(f"{len(unreadable)} unreadable image(s) were left out before the split; they are listed "
                          "in unreadable_images.csv."))
    parts += ["<h3>Leakage guard</h3>", _leakage(folder, cfg)]
    return section("Data", *parts, anchor="data")


def describe_input(info: ModelInfo) -> str:
    """What the network takes in, in words: crop, stretch and size."""
    crop = "the whole image" if info.center_crop >= 1 else f"the central {info.center_crop:.0%} of each side"
    soft = info.stretch_softening
    soft = ", ".join(f"{v:g}" for v in soft) if isinstance(soft, list) else f"{soft:g}"
    stretch = f"asinh stretch (softening {soft})" if info.stretch == "asinh" else "no stretch (linear)"
    return f"{crop}, {stretch}, resized to {info.image_size} x {info.image_size} px"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {rest} s" if minutes else f"{rest} s"


def software() -> str:
    """Python and the packages that trained the model, as imported in this process."""
    versions = [f"{name} {importlib.import_module(name).__version__}" for name in PACKAGES]
    return ", ".join([f"Python {platform.python_version()}", *versions])


def model_section(cfg: Config | None, info: ModelInfo, stages: list[dict]) -> str:
    """The model and its weights, its input, the software, the date and the time the stages took."""
    weights = {"hub": "hub (timm's pretrained weights)", "none": "none (random initialisation)"}
    rows = []
    if cfg is not None:
        rows += [["model", cfg.model.name], ["weights", weights.get(cfg.model.weights, cfg.model.weights)]]
    rows += [["input", describe_input(info)], ["software", software()],
             ["report written", datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")]]
    if stages:
        total = sum(s.get("seconds") or 0 for s in stages)
        rows.append(["time", f"{_duration(total)} in the stages (stages.json; reading the data not included)"])
    return section("Model and software", table([], rows, text=True), anchor="model")
