"""The HTML report: built from a small fake run folder, then opened in headless Chromium."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.special import softmax

from galaxytune.decision import DecisionRule
from galaxytune.evaluation.stage_table import stage_gains, stage_row, write_table
from galaxytune.report.html import write_evaluation_report, write_run_report
from galaxytune.run_folder import RunFolder

CLASSES = ["smooth", "disk_face_on_spiral", "disk_edge_on"]
N = 30  # images per split
RUN_PLOTS = ("curves_transfer", "curves_finetune", "confusion_before", "confusion_final", "per_class",
             "reliability", "roc_pr")
SECTIONS = ("Stage table", "Training curves", "Confusion matrices (", "Per-class precision and recall",
            "Reliability (", "ROC and precision-recall curves", "Most confident mistakes",
            "Least certain predictions")

# Appended to a copy of the report: on window load (every image has loaded or failed by then),
# write a verdict that --dump-dom prints with the rest of the page.
IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const bad = images.flatMap((im, i) => (im.complete && im.naturalWidth > 0 ? [] : [i]));
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = bad.length ? `IMAGES_BAD n=${images.length} bad=${bad.join(",")}` : `IMAGES_OK n=${images.length}`;
  document.body.appendChild(out);
});
</script>"""


def _images(folder: Path, split: str, y: np.ndarray) -> list[Path]:
    """Tiny PNGs; image 0 is missing and image 1 is not an image, to test that both are skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i, c in enumerate(y):
        path = folder / f"{split}_{i}.png"
        if i == 1:
            path.write_bytes(b"not an image")
        elif i > 1:
            pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            pixels[..., c] = 255  # a tint per class, so the thumbnails differ visibly
            Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _logits(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    logits = rng.normal(size=(len(y), len(CLASSES))).astype(np.float32)
    logits[np.arange(len(y)), y] += 1.5
    logits[:2] = 0
    logits[[0, 1], (y[:2] + 1) % len(CLASSES)] = 6.0  # confident mistakes: the broken images reach the gallery
    return logits


def make_run(run_dir: Path, stages: tuple[str, ...] = ("transfer", "finetune", "decision")) -> Path:
    """A run folder in the format ``galaxytune train`` writes."""
    rng = np.random.default_rng(0)
    y = {split: rng.integers(0, len(CLASSES), N) for split in ("val", "test")}
    outputs: dict[str, np.ndarray] = {"y_val": y["val"], "y_test": y["test"]}
    for split in ("val", "test"):
        outputs[f"{split}_paths"] = np.array([str(p) for p in _images(run_dir.parent / "images", split, y[split])])
        previous = None
        for stage in stages:
            # The decision stage holds the raw logits of the stage before it.
            previous = previous if stage == "decision" and previous is not None else _logits(y[split], rng)
            outputs[f"{stage}_{split}"] = previous
    (run_dir / "models").mkdir(parents=True)
    np.savez_compressed(run_dir / "stage_outputs.npz", **outputs)
    decision = {"temperature": 1.6, "offsets": [0.3, -0.1, -0.2]} if "decision" in stages else {
        "temperature": 1.0, "offsets": []}
    (run_dir / "models" / "model.json").write_text(json.dumps({
        "architecture": "resnet18", "classes": CLASSES, "image_size": 64, "center_crop": 1.0,
        "mean": [0.5] * 3, "std": [0.5] * 3, "decision": decision, "create_kwargs": {},
    }))
    # The stage table and gains come from the writers that `galaxytune train` uses.
    rule = DecisionRule(**decision)
    probs = {(stage, split): (rule.probabilities(outputs[f"{stage}_{split}"]) if stage == "decision"
                              else softmax(outputs[f"{stage}_{split}"], axis=1))
             for stage in stages for split in ("val", "test")}
    table = [stage_row(s, probs[s, "val"], probs[s, "test"], y["val"], y["test"], 1.5) for s in stages]
    gains = stage_gains(list(stages), [probs[s, "test"] for s in stages], y["test"])
    write_table(table, gains, RunFolder(run_dir))
    with open(run_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["stage", "epoch", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy",
                         "val_macro_f1", "lr"])
        for stage in (s for s in stages if s != "decision"):
            for epoch in range(4):
                values = [1 / (epoch + 1), 1.2 / (epoch + 1), 0.5 + epoch / 10, 0.4 + epoch / 10, 0.4, 1e-3]
                values[0] = "" if epoch == 3 else values[0]  # an empty cell, as Lightning's logs may leave
                writer.writerow([stage, epoch, *values])
    return run_dir


@pytest.fixture(scope="module")
def run_report(tmp_path_factory) -> Path:
    return write_run_report(make_run(tmp_path_factory.mktemp("fake") / "run"))


@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found:
        return found
    try:
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            subprocess.run(command, check=True, capture_output=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"chromium is not installed and 'apt-get install chromium' failed: {exc} {detail[-300:]!r}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("'apt-get install chromium' ran but no chromium binary is on PATH")
    return found


def image_check(chromium: str, html: str, work: Path) -> str:
    """Open ``html`` plus the image check in headless Chromium and return the verdict."""
    page = work / "check.html"
    page.write_text(html.replace("</body>", IMAGE_CHECK + "</body>"))
    profile = work / "profile"
    profile.mkdir()
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    match = re.search(r'<pre id="image-check">([^<]*)</pre>', result.stdout)
    assert match, f"no verdict in Chromium's DOM (exit {result.returncode}): {result.stderr[-2000:]}"
    return match.group(1)


def test_run_report_has_every_section_and_plot(run_report: Path):
    html = run_report.read_text()
    for name in RUN_PLOTS:
        assert (run_report.parent / "plots" / f"{name}.png").stat().st_size > 1000, name
    for title in SECTIONS:
        assert title in html, title
    assert "reported only" in html
    assert "P(no gain)" in html and html.count("decision</td><td>finetune") == 3  # paired gains, 3 metrics
    assert re.search(r"0\.\d{4} \[0\.\d{3}, 0\.\d{3}\]", html)  # test metrics with their interval
    assert "temperature only" in html  # the reliability panel between raw and full decision rule
    assert html.count('<div class="missing">') >= 2  # the missing and the corrupt image, skipped
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r'(?:src|href)="(?!data:)', html)


def test_run_report_images_load_in_chromium(run_report: Path, chromium: str, tmp_path: Path):
    html = run_report.read_text()
    n_images = html.count("<img ")
    assert n_images > len(RUN_PLOTS)  # the plots and the gallery's thumbnails
    assert image_check(chromium, html, tmp_path) == f"IMAGES_OK n={n_images}"


def test_image_check_detects_a_broken_image(run_report: Path, chromium: str, tmp_path: Path):
    html, replaced = re.subn(r'src="data:image/png;base64,[^"]*"', 'src="data:image/png;base64,bm90IGEgcG5n"',
                             run_report.read_text(), count=1)
    assert replaced == 1
    verdict = image_check(chromium, html, tmp_path)
    assert verdict == f"IMAGES_BAD n={html.count('<img ')} bad=0"


def test_run_without_transfer_and_decision(tmp_path: Path):
    report = write_run_report(make_run(tmp_path / "run", stages=("finetune",)))
    html = report.read_text()
    plots = {p.stem for p in (report.parent / "plots").glob("*.png")}
    assert plots == set(RUN_PLOTS) - {"curves_transfer", "confusion_before"}
    assert "decision rule" not in html.split("<h2>Training curves", 1)[1]


def test_evaluation_report(tmp_path: Path, chromium: str):
    rng = np.random.default_rng(2)
    y = rng.integers(0, len(CLASSES), N)
    logits = _logits(y, rng)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    paths = _images(tmp_path / "images", "eval", y)
    report = write_evaluation_report(tmp_path / "eval", CLASSES, y, probs, paths, "evaluation of resnet18")
    html = report.read_text()
    assert "Stage table" not in html and "Training curves" not in html
    for title in SECTIONS[2:]:
        assert title in html, title
    plots = {p.stem for p in (report.parent / "plots").glob("*.png")}
    assert plots == {"confusion_final", "per_class", "reliability", "roc_pr"}
    assert image_check(chromium, html, tmp_path) == f"IMAGES_OK n={html.count('<img ')}"
