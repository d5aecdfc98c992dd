"""Property-based tests: hostile images, CSV catalogs and config overrides never crash.

Each input either works or ends as the project's own handled outcome: an unreadable image is
recorded with its reason (and skipped), a bad catalog or setting is one GalaxytuneError that
names what is wrong. Any other exception is a bug. Hypothesis draws the inputs; the examples
pinned with @example are defects these tests found (kept as regressions).
"""

from __future__ import annotations

import csv
import io
import math
import os
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from torch import nn

from galaxytune.config import Config, DataConfig, LabelsConfig, load_config
from galaxytune.data.csv_table import read_columns, read_header
from galaxytune.data.formats import find_samples
from galaxytune.data.images import iter_decoded
from galaxytune.data.readers.catalog import catalog_paths
from galaxytune.errors import ConfigError, GalaxytuneError

SIZE = 16
# A longer hunt: GALAXYTUNE_PROPERTY_SCALE=20 draws twenty times the examples of each test.
SCALE = int(os.environ.get("GALAXYTUNE_PROPERTY_SCALE", "1"))
FAST = settings(max_examples=40 * SCALE, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def decode(paths: list[Path], center_crop: float = 1.0):
    """The project's decoding path (as training and prediction use it): kept indices, pixels and
    the unreadable files with their reasons."""
    kept, pixels, bad = [], [], []
    for indices, batch, _, failed in iter_decoded(paths, SIZE, center_crop, 0, 64, "decode"):
        kept += indices
        pixels.append(batch)
        bad += failed
    return kept, torch.cat(pixels), bad


def assert_handled(paths: list[Path], kept, pixels, bad) -> None:
    """Every file is either decoded (a (3, SIZE, SIZE) uint8 array) or recorded with a reason."""
    assert sorted(kept + [paths.index(p) for p, _ in bad]) == list(range(len(paths)))
    assert pixels.shape == (len(kept), 3, SIZE, SIZE) and pixels.dtype == torch.uint8
    for _, reason in bad:  # "ExceptionName: what the decoder said"
        assert reason.partition(": ")[0].isidentifier()


# ---------------------------------------------------------------------------------------------
# Images

# Modes and the formats that can store them (PIL 11: PNG has no 'I' or 'F', JPEG no alpha).
MODES = {
    "1": ("PNG", "JPEG", "TIFF"), "L": ("PNG", "JPEG", "TIFF"), "LA": ("PNG", "TIFF"), "P": ("PNG", "TIFF"),
    "I;16": ("PNG", "TIFF"), "I": ("TIFF",), "F": ("TIFF",), "RGB": ("PNG", "JPEG", "TIFF"),
    "RGBA": ("PNG", "TIFF"), "CMYK": ("JPEG", "TIFF"),
}
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}
# 1x1 pixels, ordinary cutouts and extreme aspect ratios.
SIZES = st.one_of(
    st.tuples(st.integers(1, 48), st.integers(1, 48)),
    st.sampled_from([(1, 1), (1, 3000), (3000, 1), (2, 1500), (1500, 3)]),
)


def pixels_of(mode: str, size: tuple[int, int], seed: int, special: str) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "F":
        arr = rng.normal(0, 1e3, (h, w)).astype(np.float32)
        if special == "nan":
            arr.flat[0] = np.nan
        elif special == "inf":
            arr.flat[-1] = np.inf
        elif special == "extreme":
            arr.flat[0], arr.flat[-1] = -3e38, 3e38
        elif special == "constant":
            arr[:] = 7.0
        return Image.fromarray(arr, "F")
    if mode in ("I", "I;16"):
        top = 2**16 if mode == "I;16" else 2**31
        arr = np.full((h, w), top - 1 if special == "constant" else 0, np.int64)
        if special != "constant":
            arr = rng.integers(0, top, (h, w))
        im = Image.fromarray(arr.astype(np.int32), "I")
        return im if mode == "I" else im.convert("I;16")
    base = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    if mode == "P":
        return base.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=int(rng.integers(1, 256)))
    return base.convert(mode)


@st.composite
def image_files(draw):
    """(file name, bytes, intact): an image of any mode and shape, maybe truncated or corrupted."""
    mode = draw(st.sampled_from(sorted(MODES)))
    fmt = draw(st.sampled_from(MODES[mode]))
    size = draw(SIZES)
    im = pixels_of(mode, size, draw(st.integers(0, 2**32 - 1)), draw(st.sampled_from(["", "nan", "inf", "extreme",
                                                                                        "constant"])))
    buffer = io.BytesIO()
    im.save(buffer, fmt)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "truncate", "flip", "header"]))
    if damage == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif damage == "flip":
        for at, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1,
                                       max_size=8)):
            data = data[:at] + bytes([value]) + data[at + 1:]
    elif damage == "header":  # the first bytes, where signature, dimensions and mode live
        head = draw(st.binary(min_size=1, max_size=32))
        at = draw(st.integers(0, 24))
        data = data[:at] + head + data[at + len(head):]
    return f"im{SUFFIX[fmt]}", data, damage == "none"


@FAST
@given(files=st.lists(image_files(), min_size=1, max_size=3), center_crop=st.floats(0.01, 1.0))
@example(files=[("one.png", b"", False)], center_crop=1.0)
def test_any_image_file_decodes_or_is_recorded_as_unreadable(files, center_crop):
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (name, data, _) in enumerate(files):
            paths.append(Path(tmp) / f"{i}-{name}")
            paths[-1].write_bytes(data)
        kept, pixels, bad = decode(paths, center_crop)
        assert_handled(paths, kept, pixels, bad)
        for i, (_, _, intact) in enumerate(files):
            if intact:  # an undamaged image of any mode or shape must never be thrown away
                assert i in kept, bad


@FAST
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".png", ".jpg", ".jpeg", ".fits", ".fits.gz", ".tif"]))
@example(data=b"\x89PNG\r\n\x1a\n", suffix=".png")
@example(data=b"\xff\xd8\xff\xe0", suffix=".jpg")
@example(data=b"SIMPLE  =                    T", suffix=".fits")
def test_random_bytes_are_recorded_as_unreadable(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(data)
        kept, pixels, bad = decode([path])
        assert_handled([path], kept, pixels, bad)


@FAST
@given(pixels=arrays(np.float32, st.integers(1, 12).map(lambda n: (n, n)), elements=st.floats(width=32)))
@example(pixels=np.array([[np.nan, 1.0], [2.0, 3.0]], np.float32))
@example(pixels=np.array([[np.inf, 1.0], [2.0, -np.inf]], np.float32))
@example(pixels=np.array([[-3e38, 0.0], [1.0, 3e38]], np.float32))
def test_nan_or_inf_pixels_do_not_blank_a_float_image(pixels):
    """One NaN (a masked pixel) or inf used to turn the whole image black, silently."""
    from galaxytune.data.images import read_image

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow, no NaN cast to uint8
        path = Path(tmp) / "float.tif"
        Image.fromarray(pixels, "F").save(path)
        out = read_image(path, SIZE)
    finite = pixels[np.isfinite(pixels)]
    assert out.shape == (3, SIZE, SIZE)
    if finite.size and finite.min() < finite.max():
        assert out.max() > out.min()


def png_declaring(width: int, height: int, colour: int, pixels: bytes) -> bytes:
    """A PNG whose header declares any size, followed by ``pixels`` (usually far too few)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header is edited to declare ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"\xff\xc0")  # SOF0: length (2), precision (1), height (2), width (2)
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


BOMB = 2 * Image.MAX_IMAGE_PIXELS


@FAST
@given(
    width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1), colour=st.sampled_from([0, 2, 4, 6]),
    pixels=st.binary(max_size=64), jpeg=st.booleans(),
)
@example(width=100_000, height=100_000, colour=2, pixels=b"", jpeg=False)
@example(width=65_535, height=65_535, colour=2, pixels=b"", jpeg=True)
@example(width=1, height=2**31 - 1, colour=0, pixels=b"\0" * 64, jpeg=False)
def test_huge_declared_dimensions_are_refused_without_decoding(width, height, colour, pixels, jpeg):
    if jpeg:
        width, height = min(width, 65_535), min(height, 65_535)
    # Sizes between ~1 Mpx and the decompression-bomb limit are real (if large) images: PIL
    # allocates them before it finds the data missing. Not what this test is about.
    if 2**20 < width * height <= BOMB:
        width, height = max(1, width % 1024), max(1, height % 1024)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("bomb.jpg" if jpeg else "bomb.png")
        path.write_bytes(jpeg_declaring(width, height) if jpeg else png_declaring(width, height, colour, pixels))
        kept, pixels_out, bad = decode([path])
        assert_handled([path], kept, pixels_out, bad)
        if width * height > BOMB:
            assert not kept and "DecompressionBomb" in bad[0][1]


# ---------------------------------------------------------------------------------------------
# CSV catalogs

IMAGES = ("a.png", "b.png", "sub/c.png")
CLASSES = ["spiral", "elliptical"]
COLUMNS = st.one_of(
    st.sampled_from(["filename", "label", "split", "path", "class", "GalaxyID", "Class1.1", "\ufefffilename",
                     "t01_smooth_or_features_a01_smooth_fraction", "smooth-or-featured_smooth_fraction",
                     " filename", "Filename"]),
    st.text(max_size=10),
)
CELLS = st.one_of(
    st.sampled_from(IMAGES),  # images that exist
    st.sampled_from(["missing.png", "../a.png", "/nonexistent/x.png", "x.h5::3", "x.h5::-1", "a.png::2", "x" * 300,
                     "d" * 300 + "/a.png", "", " ", "sub", ".", "a.png\0", "~/a.png"]),
    st.sampled_from(['=HYPERLINK("http://x","y")', "+1", "-1", "@SUM(A1)", "=cmd|' /C calc'!A0"]),  # formulas
    st.sampled_from(["train", "val", "valid", "TEST", "bogus"]),  # splits
    st.sampled_from([*CLASSES, "merger", " spiral ", "SPIRAL"]),  # known and unknown classes
    st.sampled_from(["0.5", "nan", "1e999", "-3", "1,5"]),
    st.text(max_size=12),
)


@st.composite
def catalogs(draw) -> tuple[bytes, str, str, bool]:
    """(CSV bytes, path column, label column, labels from vote rules): half of them a good catalog
    with at most one fault (spoiled cells, another delimiter or encoding, stray bytes), half anything."""
    path_column, label_column = draw(st.sampled_from([("filename", "label"), ("path", "class")]))
    rules = draw(st.booleans())
    good = draw(st.booleans())
    fault = draw(st.sampled_from(["none", "cells", "format", "bytes"])) if good else "any"
    if good:
        extra = draw(st.sampled_from([[], ["split"], ["x"]])) + (["Class1.1"] if rules else [])
        header = draw(st.permutations([path_column, label_column, *extra]))
        row = st.fixed_dictionaries({
            path_column: st.sampled_from([*IMAGES, "sub/broken.png"]), label_column: st.sampled_from(CLASSES),
            "split": st.sampled_from(["train", "train", "val", "test", "valid"]), "x": CELLS,
            "Class1.1": st.sampled_from(["0.1", "0.9", "1", "0"]),
        })
        rows = [[r[c] for c in header] for r in draw(st.lists(row, min_size=1, max_size=6))]
        for _ in range(draw(st.integers(1, 3)) if fault == "cells" else 0):
            i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(header) - 1))
            rows[i][j] = draw(CELLS)
    else:
        header = draw(st.lists(COLUMNS, max_size=5))
        rows = draw(st.lists(st.lists(CELLS, max_size=6), max_size=6))
    odd = fault in ("format", "any")
    text = io.StringIO()
    writer = csv.writer(
        text, delimiter=draw(st.sampled_from([",", ";", "\t", "|"])) if odd else ",",
        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])),
        lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])),
    )
    if header or draw(st.booleans()):
        writer.writerow(header)
    writer.writerows(rows)
    encodings = ["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"] if odd else ["utf-8", "utf-8-sig"]
    data = text.getvalue().encode(draw(st.sampled_from(encodings)), errors="replace")
    if fault == "bytes" or (fault == "any" and draw(st.booleans())):  # invalid UTF-8, NUL, stray quotes
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return data, path_column, label_column, rules


class StubNet(nn.Module):
    """Logits from the mean brightness: enough to run evaluation without a real network."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(len(CLASSES)))

    def forward(self, x):
        return x.float().mean(dim=(1, 2, 3))[:, None] * self.w


@pytest.fixture(scope="module")
def predictor():
    from galaxytune.inference.predict import Predictor
    from galaxytune.inference.saved import ModelInfo

    return Predictor(StubNet(), ModelInfo("stub", list(CLASSES), SIZE, 1.0, [0.5] * 3, [0.5] * 3))


def write_catalog(folder: Path, data: bytes) -> Path:
    for name in IMAGES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), "white").save(folder / name)
    (folder / "sub" / "broken.png").write_bytes(b"not an image")
    path = folder / "catalog.csv"
    path.write_bytes(data)
    return path


@settings(max_examples=60 * SCALE, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(catalog=catalogs())
@example(catalog=(b"filename,label\n" + b"x" * 300 + b",spiral\n", "filename", "label", False))
@example(catalog=(b"GalaxyID,Class1.1\n" + b"9" * 300 + b",0.5\n", "filename", "label", True))
@example(catalog=(b"filename,label\nsub/broken.png,spiral\n", "filename", "label", False))  # no readable image
def test_any_catalog_gives_samples_or_one_clear_error(catalog, predictor, capsys):
    from galaxytune.evaluation.evaluate import evaluate

    data, path_column, label_column, rules = catalog
    # Labels from a column, or from vote fractions (a Kaggle-like 'Class1.1' column).
    labels = LabelsConfig(rules=[{"spiral": "Class1.1 >= 0.5"}, {"elliptical": "otherwise"}] if rules else [])
    with tempfile.TemporaryDirectory() as tmp:
        catalog = write_catalog(Path(tmp), data)
        try:
            found = find_samples(DataConfig(path=str(catalog), path_column=path_column, label_column=label_column,
                                            labels=labels))
            assert found and "train" in found
            for samples in found.values():
                assert all(s.path.is_file() and s.label and s.label == s.label.strip() for s in samples)
            event("samples found")
        except GalaxytuneError as exc:
            assert str(exc).strip()
            event(f"error: {type(exc).__name__}")
        try:
            paths = catalog_paths(catalog, path_column)
            assert all(isinstance(p, Path) for p in paths)
        except GalaxytuneError as exc:
            assert str(exc).strip()
        try:  # unknown classes, missing images and unreadable ones, through evaluation
            result = evaluate(predictor, str(catalog), path_column=path_column, label_column=label_column)
            assert len(result.y_true) == len(result.predictions.paths)
            event("evaluated")
        except GalaxytuneError as exc:
            assert str(exc).strip()
            event("evaluation: " + ("unknown class" if "does not know" in str(exc) else "other error"))
        try:  # the reader of vote tables
            header = read_header(catalog)
            read_columns(catalog, header[:2])
        except GalaxytuneError as exc:
            assert str(exc).strip()
    capsys.readouterr()


@pytest.mark.parametrize("sep, name", [(";", "';'"), ("\t", "tab"), ("|", "'|'")])
@pytest.mark.parametrize("vote_table", [False, True])
def test_a_catalog_with_another_separator_says_so(tmp_path, sep, name, vote_table):
    catalog = write_catalog(tmp_path, sep.join(["filename", "label", "Class1.1"]).encode() + b"\na.png;spiral;1\n")
    rules = [{"spiral": "Class1.1 >= 0.5"}, {"elliptical": "otherwise"}] if vote_table else []
    with pytest.raises(GalaxytuneError, match=f"looks {name}-separated: save it comma-separated"):
        find_samples(DataConfig(path=str(catalog), labels=LabelsConfig(rules=rules)))


# ---------------------------------------------------------------------------------------------
# Config overrides


def _keys(cls, prefix: str = "") -> list[str]:
    import dataclasses

    out = []
    for f in dataclasses.fields(cls):
        out.append(prefix + f.name)
        if dataclasses.is_dataclass(f.default_factory() if callable(f.default_factory) else None):
            out += _keys(type(f.default_factory()), f"{prefix}{f.name}.")
    return out


KEYS = st.one_of(
    st.sampled_from(_keys(Config)), st.sampled_from(_keys(Config)),
    st.sampled_from(["finetune.lrate", "bogus", "data.labels.nope", "", ".", "a..b", "finetune.", ".lr", "data.path.x",
                     " finetune.lr ", "FINETUNE.LR"]),
    st.text(alphabet=st.characters(blacklist_characters="="), max_size=12),
)
PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-10**500, 10**500) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.one_of(st.text(max_size=6), st.integers(), st.none(), st.booleans(), st.floats()), inner, max_size=3),
    max_leaves=6,
)
# Values a setting could take (so that validation past the type checks is reached too) ...
PLAUSIBLE = st.one_of(
    st.integers(-3, 300).map(str), st.floats(-2, 2, allow_nan=False).map(repr),
    st.sampled_from(["auto", "none", "off", "full", "lora", "head", "top-blocks", "yes", "no", "warn", "fail", "true",
                     "false", "quarter", "any", "asinh", "percentile", "macro_f1", "loss", "16-mixed", "cpu", "[]",
                     "[0.5, 0.5, 0.5]", "{test: valid}", "[[a, b]]", "{a: x, b: y}", "[_g, _r]", "[0, 1, 2]"]),
)
# ... and hostile ones.
VALUES = st.one_of(
    PLAUSIBLE, PLAUSIBLE,
    st.sampled_from(["nan", ".nan", ".inf", "-.inf", "1e999", "-1e999", "-1", "0", "-0.0", "1" + "0" * 400,
                     "-" + "9" * 400, "true", "false", "off", "null", "~", "[]", "{}", "[1, 2, 3]", "{a: 1}",
                     "{1: 2}", "{null: 1}", "{true: x}", "{1.5: 2}", "[[1]]", "'x'", "!!binary aGk=", "2020-01-01",
                     "0x10", "1_000", "0o17", "&a [*a]", "!!python/object:os.system x", "{", "'", "*x", "?", "- a",
                     "[{a: 1}]", "[{1: 'a >= 1'}]", "[{a: 'b >= 1e999'}]"]),
    st.text(max_size=16),
    PLAIN.map(lambda v: yaml.safe_dump(v, default_flow_style=True, width=math.inf).removesuffix("\n...\n")),
)


@settings(max_examples=300 * SCALE, deadline=None, database=None)
@given(overrides=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=3))
@example(overrides=[("finetune.epochs", "1" + "0" * 400)])
@example(overrides=[("data", "{1: 2}")])
@example(overrides=[("data.labels", "{null: x}")])
def test_any_override_gives_a_config_or_one_config_error(overrides):
    try:
        config = load_config(overrides=[f"{key}={value}" for key, value in overrides])
    except ConfigError as exc:
        assert str(exc).strip()
        event("ConfigError")
    else:
        assert isinstance(config, Config)
        event("Config")


def nested(key: str, value: str) -> str:
    """``a.b.c`` and a YAML value as the document ``a:\n  b:\n    c: value``."""
    parts = key.split(".")
    return "".join(f"{'  ' * i}{part}:\n" for i, part in enumerate(parts[:-1])) + \
        f"{'  ' * (len(parts) - 1)}{parts[-1]}: {value}\n"


@settings(max_examples=100 * SCALE, deadline=None, database=None)
@given(document=st.one_of(
    VALUES, PLAIN.map(yaml.safe_dump), st.dictionaries(KEYS, PLAIN).map(yaml.safe_dump),
    st.builds(nested, KEYS, VALUES), st.builds(nested, KEYS, VALUES),
))
@example(document="data: {7: 1}")
def test_any_config_file_gives_a_config_or_one_config_error(document):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(document)
        try:
            config = load_config(path)
        except ConfigError as exc:
            assert str(exc).strip()
        else:
            assert isinstance(config, Config)
