"""The HTML report: built from a small fake run folder, then opened in headless Chromium."""

from __future__ import annotations

import base64
import csv
import io
import json
import platform
import re
import shutil
import subprocess
from dataclasses import asdict
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import lightning
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from scipy.special import softmax

import galaxytune
from galaxytune.config import Config
from galaxytune.data.leakage import Leakage, Overlap, write_overlaps
from galaxytune.data.samples import Sample
from galaxytune.data.splits import write_splits
from galaxytune.decision import DecisionRule
from galaxytune.evaluation.stage_table import stage_gains, stage_row, write_table
from galaxytune.files import write_json
from galaxytune.inference.saved import ModelInfo
from galaxytune.report.html import write_evaluation_report, write_run_report
from galaxytune.report.summary import data_section
from galaxytune.run_folder import RunFolder
from galaxytune.training.pipeline import StageOutput

CLASSES = ["smooth", "disk_face_on_spiral", "disk_edge_on"]
N = 30  # images per split
N_TRAIN = 40
GALLERY_CARDS = 12  # per gallery: N images of which the 12 most confident mistakes and the 12 least certain
SECONDS = {"transfer": 12.5, "finetune": 185.25, "tta": 5.0, "decision": 0.25}
# What the network takes in: the central half of each 48 px field, asinh-stretched, at 32 px.
INFO = ModelInfo(architecture="resnet18", classes=CLASSES, image_size=32, center_crop=0.5, mean=[0.5] * 3,
                 std=[0.5] * 3, stretch="asinh", stretch_softening=0.05)
FIELD, LEVELS = 48, (8, 16, 32)  # the centre of an image of class c is a flat grey LEVELS[c]; the rest is white
GUARD_NOTE = "no finetuned epoch beat the transfer stage on validation: its weights are kept (finetune.guard)"
RUN_PLOTS = ("curves_transfer", "curves_finetune", "confusion_before", "confusion_final", "per_class",
             "reliability", "roc_pr")
RUN_SECTIONS = ("Stage table", "Data", "Leakage guard", "Model and software", "Training curves")
SHARED_SECTIONS = ("Confusion matrices (", "Per-class precision and recall", "Reliability (",
                   "ROC and precision-recall curves", "Most confident mistakes", "Least certain predictions")
SECTIONS = RUN_SECTIONS + SHARED_SECTIONS

# Appended to a copy of the report: on window load (every image has loaded or failed by then),
# write a verdict that --dump-dom prints with the rest of the page.
# Appended likewise: where the report's parts land in a 1400 px window.
LAYOUT_CHECK = """<script>
window.addEventListener("load", () => {
  const size = (el) => { const r = el.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; };
  const table = document.querySelector("table.stages");
  const out = document.createElement("pre");
  out.id = "layout-check";
  out.textContent = JSON.stringify({
    window: window.innerWidth, page: document.documentElement.scrollWidth,
    table: table.getBoundingClientRect().width, box: table.parentElement.clientWidth,
    tops: Array.from(document.querySelectorAll("#headline .metric"),
                     (el) => Math.round(el.getBoundingClientRect().top)),
    sections: Object.fromEntries(["headline", "stage-table", "data", "model"].map(
      (id) => [id, size(document.getElementById(id))])),
    rows: Array.from(table.tBodies[0].rows, (tr) => Math.round(tr.getBoundingClientRect().height)),
    line: parseFloat(getComputedStyle(table).fontSize),
  });
  document.body.appendChild(out);
});
</script>"""

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
    """Tiny PNG fields, white but for a grey centre whose level tells the class; image 0 is
    missing and image 1 is not an image, to test that both are skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, c in enumerate(y):
        path = folder / f"{split}_{i}.png"
        if i == 1:
            path.write_bytes(b"not an image")
        elif i > 1:
            pixels = np.full((FIELD, FIELD, 3), 255, np.uint8)
            pixels[FIELD // 4:-FIELD // 4, FIELD // 4:-FIELD // 4] = LEVELS[c]
            Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _logits(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    logits = rng.normal(size=(len(y), len(CLASSES))).astype(np.float32)
    logits[np.arange(len(y)), y] += 1.5
    logits[:2] = 0
    logits[[0, 1], (y[:2] + 1) % len(CLASSES)] = 6.0  # confident mistakes: the broken images reach the gallery
    return logits


def _train_path(run_dir: Path, i: int) -> Path:
    """Where a training image was: a long path, as real ones can be, that the report must wrap."""
    return run_dir.parent / "images" / ("a_long_folder_name_without_breaks_" * 4) / f"train_{i}.png"


def make_run(run_dir: Path, stages: tuple[str, ...] = ("transfer", "finetune", "decision")) -> Path:
    """A run folder in the format ``galaxytune train`` writes; a finetune stage after transfer
    is one the guard kept (its outputs are transfer's)."""
    rng = np.random.default_rng(0)
    y = {split: rng.integers(0, len(CLASSES), N) for split in ("val", "test")}
    outputs: dict[str, np.ndarray] = {"y_val": y["val"], "y_test": y["test"]}
    paths = {split: _images(run_dir.parent / "images", split, y[split]) for split in ("val", "test")}
    kept = "finetune" in stages and stages[0] == "transfer"
    for split in ("val", "test"):
        outputs[f"{split}_paths"] = np.array([str(p) for p in paths[split]])
        previous = None
        for stage in stages:
            # The decision stage holds the raw logits of the stage before it, as does a kept finetune.
            reuse = stage == "decision" or (stage == "finetune" and kept)
            previous = previous if reuse and previous is not None else _logits(y[split], rng)
            outputs[f"{stage}_{split}"] = previous
    (run_dir / "models").mkdir(parents=True)
    np.savez_compressed(run_dir / "stage_outputs.npz", **outputs)
    decision = {"temperature": 1.6, "offsets": [0.3, -0.1, -0.2]} if "decision" in stages else {
        "temperature": 1.0, "offsets": []}
    write_json(run_dir / "models" / "model.json", asdict(INFO) | {"decision": decision})
    # The stage table and gains come from the writers that `galaxytune train` uses.
    rule = DecisionRule(**decision)
    probs = {(stage, split): (rule.probabilities(outputs[f"{stage}_{split}"]) if stage == "decision"
                              else softmax(outputs[f"{stage}_{split}"], axis=1))
             for stage in stages for split in ("val", "test")}
    table = [stage_row(s, probs[s, "val"], probs[s, "test"], y["val"], y["test"], SECONDS[s]) for s in stages]
    gains = stage_gains(list(stages), [probs[s, "test"] for s in stages], y["test"])
    write_table(table, gains, RunFolder(run_dir))
    summaries = [StageOutput(s, None, None, seconds=SECONDS[s]).summary() for s in stages]
    for summary in summaries:
        if summary["stage"] == "finetune" and kept:
            summary.update(kept_incoming=True, note=GUARD_NOTE)
    write_json(run_dir / "stages.json", summaries)
    cfg = Config()
    cfg.data.path, cfg.model.name, cfg.model.weights = str(run_dir.parent / "images"), "resnet18", "/w/resnet18.pt"
    cfg.save(run_dir / "config.yaml")
    train = [Sample(_train_path(run_dir, i), CLASSES[i % 3]) for i in range(N_TRAIN)]
    write_splits({"train": train, **{split: [Sample(p, CLASSES[c]) for p, c in zip(paths[split], y[split])]
                                     for split in ("val", "test")}}, run_dir / "splits.csv")
    twin = Overlap("test", paths["test"][3], "train", train[0].path, "near-duplicate", 12, 0.08)
    write_json(run_dir / "leakage.json", Leakage(2 * N, 7, 2, [twin]).summary())
    write_overlaps([twin], run_dir / "leakage.csv")
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


def browser_check(chromium: str, html: str, work: Path, script: str, verdict: str) -> str:
    """Open ``html`` plus ``script`` in headless Chromium, in a 1400 x 1000 window, and return the
    text the script wrote into ``<pre id=verdict>``."""
    page = work / f"{verdict}.html"
    page.write_text(html.replace("</body>", script + "</body>"))
    profile = work / f"profile-{verdict}"
    profile.mkdir()
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1400,1000", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    match = re.search(rf'<pre id="{verdict}">([^<]*)</pre>', result.stdout)
    assert match, f"no verdict in Chromium's DOM (exit {result.returncode}): {result.stderr[-2000:]}"
    return match.group(1)


def image_check(chromium: str, html: str, work: Path) -> str:
    return browser_check(chromium, html, work, IMAGE_CHECK, "image-check")


class Element:
    """A parsed HTML element: enough of a DOM to look for sections, tables and cells."""

    def __init__(self, tag: str, attrs: dict, parent: Element | None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def find_all(self, tag: str, cls: str | None = None) -> list[Element]:
        found = []
        for child in self.children:
            if isinstance(child, Element):
                if child.tag == tag and (cls is None or cls in child.attrs.get("class", "").split()):
                    found.append(child)
                found += child.find_all(tag, cls)
        return found

    def by_id(self, ident: str) -> Element:
        found = [e for e in self.find_all("section") + self.find_all("div") if e.attrs.get("id") == ident]
        assert len(found) == 1, ident
        return found[0]

    def rows(self) -> list[list[str]]:
        return [[" ".join(c.text.split()) for c in tr.children if isinstance(c, Element)] for tr in self.find_all("tr")]


class _Parser(HTMLParser):
    VOID = {"br", "img", "meta", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.root = self.node = Element("root", {}, None)

    def handle_starttag(self, tag, attrs):
        element = Element(tag, dict(attrs), self.node)
        self.node.children.append(element)
        if tag not in self.VOID:
            self.node = element

    def handle_endtag(self, tag):
        node = self.node
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.node = node.parent

    def handle_data(self, data):
        self.node.children.append(data)


def parse(html: str) -> Element:
    parser = _Parser()
    parser.feed(html)
    return parser.root


def test_run_report_has_every_section_and_plot(run_report: Path):
    html = run_report.read_text()
    for name in RUN_PLOTS:
        assert (run_report.parent / "plots" / f"{name}.png").stat().st_size > 1000, name
    for title in SECTIONS:
        assert title in html, title
    assert "reported only" in html
    assert "P(no gain)" in html and html.count("decision</td><td>finetune") == 3  # paired gains, 3 metrics
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
    report = write_evaluation_report(tmp_path / "eval", CLASSES, y, probs, paths, "evaluation of resnet18", INFO)
    html = report.read_text()
    assert_model_view(html)
    for title in RUN_SECTIONS:
        assert title not in html, title
    for title in SHARED_SECTIONS:
        assert title in html, title
    plots = {p.stem for p in (report.parent / "plots").glob("*.png")}
    assert plots == {"confusion_final", "per_class", "reliability", "roc_pr"}
    assert image_check(chromium, html, tmp_path) == f"IMAGES_OK n={html.count('<img ')}"


def assert_model_view(html: str) -> None:
    """Every gallery image is what the network took in: the central half of the field (no white
    border), asinh-stretched, at the input size."""
    shown = 0
    for card in parse(html).find_all("div", "card"):
        for img in card.find_all("img"):
            pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(img.attrs["src"].split(",", 1)[1]))))
            assert pixels.shape == (INFO.image_size, INFO.image_size, 3)
            level = LEVELS[CLASSES.index(card.find_all("b")[0].text)] / 255
            stretched = 255 * np.arcsinh(level / INFO.stretch_softening) / np.arcsinh(1 / INFO.stretch_softening)
            # The resize's filter reaches a pixel beyond the crop, so the outermost ring is a little
            # brighter; JPEG rings by a few levels.
            inside = pixels[2:-2, 2:-2].astype(float)
            assert abs(np.median(inside) - stretched) < 2 and np.abs(inside - stretched).max() < 8, (level, stretched)
            assert pixels.max() < 200, "the white border beyond the crop"
            shown += 1
    assert shown >= 2 * GALLERY_CARDS - 4  # all but the missing and the corrupt image, in both galleries


def test_gallery_shows_each_image_as_the_network_took_it_in(run_report: Path):
    html = run_report.read_text()
    assert_model_view(html)
    assert "Each image as the network took it in: the central 50% of each side, asinh stretch (softening 0.05), " \
           "resized to 32 x 32 px." in html


def test_headline_gives_the_final_stage_test_metrics_with_intervals(run_report: Path):
    body = parse(run_report.read_text()).find_all("body")[0]
    first = [c for c in body.children if isinstance(c, Element)][1]  # right under the title
    assert first.attrs.get("id") == "headline"
    final = list(csv.DictReader(open(run_report.parent / "stage_table.csv")))[-1]
    assert " ".join(first.find_all("p")[0].text.split()).startswith(f"The final model (stage decision) on {N} test")
    cards = first.find_all("div", "metric")
    assert [c.find_all("div", "name")[0].text for c in cards] == ["accuracy", "balanced accuracy", "macro-F1", "ECE"]
    for card, key in zip(cards, ("accuracy", "balanced_accuracy", "macro_f1", "ece")):
        value = card.find_all("div", "value")[0]
        low, high = float(final[f"test_{key}_ci_low"]), float(final[f"test_{key}_ci_high"])
        assert value.find_all("span", "ci")[0].text == f"[{low:.3f}, {high:.3f}]"
        assert value.text == f"{float(final[f'test_{key}']):.4f}[{low:.3f}, {high:.3f}]"


def test_stage_table_explains_the_row_a_guard_kept(run_report: Path):
    section = parse(run_report.read_text()).by_id("stage-table")
    head, metrics, *rows = section.find_all("table", "stages")[0].rows()
    assert head == ["stage", "validation", "test, with 95% interval", "seconds"]
    assert metrics == ["accuracy", "balanced accuracy", "macro-F1", "ECE", "n"] * 2
    assert [r[0] for r in rows] == ["transfer", "finetune = transfer", "decision"]
    transfer, finetune, _ = rows
    assert finetune[1:-1] == transfer[1:-1] and finetune[-1] == "185.2"  # the same numbers, its own time
    assert all(re.fullmatch(r"0\.\d{4}\[0\.\d{3}, 0\.\d{3}\]", cell) for cell in transfer[6:10])  # test + interval
    parts = [c for c in section.children if isinstance(c, Element)]
    assert [p.tag for p in parts[1:3]] == ["div", "ul"]  # the sentences right under the table
    assert " ".join(parts[2].text.split()) == f"The finetune row repeats the transfer row: {GUARD_NOTE}."


def test_data_section_counts_the_classes_and_gives_the_leakage_findings(run_report: Path):
    data = parse(run_report.read_text()).by_id("data")
    assert f"Source: {run_report.parent.parent / 'images'}" in data.text
    with np.load(run_report.parent / "stage_outputs.npz") as npz:
        y = {"train": np.arange(N_TRAIN) % 3, "val": npz["y_val"], "test": npz["y_test"]}
    counts, leakage = data.find_all("table")
    expected = [[c, *(str(int((y[s] == i).sum())) for s in ("train", "val", "test")),
                 str(sum(int((y[s] == i).sum()) for s in y))] for i, c in enumerate(CLASSES)]
    assert counts.rows() == [["class", "train", "val", "test", "all"], *sorted(expected),
                             ["all", str(N_TRAIN), str(N), str(N), str(N_TRAIN + 2 * N)]]
    text = " ".join(data.text.split())
    assert (f"{2 * N} val/test image(s) compared with the earlier splits: {2 * N - 7} by file content, perceptual "
            "hash and pixels, 7 by file content only (too little structure to hash") in text
    assert "2 hash match(es) rejected by the pixels; 1 duplicate(s)." in text
    twin = leakage.rows()[1]
    assert twin == ["test", str(run_report.parent.parent / "images" / "test_3.png"),
                    f"train: {_train_path(run_report.parent, 0)}", "near-duplicate", "12", "0.080"]


def test_data_section_says_when_the_guard_was_off_or_not_recorded(tmp_path: Path):
    cfg = Config()
    cfg.data.leakage = "off"
    assert "The leakage guard was off" in parse(data_section(RunFolder(tmp_path), cfg)).text
    cfg.data.leakage = "warn"
    assert "not recorded (no leakage.json)" in parse(data_section(RunFolder(tmp_path), cfg)).text


def test_model_section_names_the_weights_software_date_and_time(run_report: Path):
    facts = dict(parse(run_report.read_text()).by_id("model").find_all("table")[0].rows())
    assert (facts["model"], facts["weights"]) == ("resnet18", "/w/resnet18.pt")
    assert facts["input"] == "the central 50% of each side, asinh stretch (softening 0.05), resized to 32 x 32 px"
    for name, version in (("Python", platform.python_version()), ("galaxytune", galaxytune.__version__),
                          ("torch", torch.__version__), ("timm", timm.__version__),
                          ("lightning", lightning.__version__), ("numpy", np.__version__)):
        assert f"{name} {version}" in facts["software"]
    assert facts["report written"].startswith(date.today().isoformat())
    assert facts["time"].startswith("3 min 18 s in the stages")  # 12.5 + 185.25 + 0.25 s


def test_report_parts_render_and_the_stage_table_fits_1400_px(run_report: Path, chromium: str, tmp_path: Path):
    layout = json.loads(browser_check(chromium, run_report.read_text(), tmp_path, LAYOUT_CHECK, "layout-check"))
    assert layout["window"] == 1400 and layout["page"] <= 1400  # no sideways scrolling
    assert 0 < layout["table"] <= layout["box"]  # the stage table fits its box
    assert len(layout["tops"]) == 4 and len(set(layout["tops"])) == 1  # the headline's figures on one line
    assert all(w > 300 and h > 40 for w, h in layout["sections"].values()), layout["sections"]
    # Each row two lines high (a figure over its interval), none wrapped further.
    assert len(set(layout["rows"])) == 1 and layout["rows"][0] < 3.5 * layout["line"], layout
