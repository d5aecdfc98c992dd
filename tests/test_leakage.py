"""The leakage guard finds val/test images that are also in train."""

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from galaxytune.config import DataConfig
from galaxytune.data.leakage import too_sparse
from galaxytune.data.prepare import prepare
from galaxytune.errors import DataError
from galaxytune.run_folder import RunFolder


def _blob(rng, size=48):
    """A galaxy-like blob at a random place, shape and brightness: distinct images differ."""
    y, x = np.mgrid[:size, :size]
    cx, cy = rng.uniform(12, size - 12, 2)
    a, b = rng.uniform(3, 10, 2)
    img = np.exp(-(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)) * rng.uniform(120, 250)
    return np.repeat((img + rng.uniform(0, 30, (size, size)))[..., None], 3, axis=2).astype(np.uint8)


@pytest.fixture
def leaky(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, n in (("train", 10), ("val", 4), ("test", 4)):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_blob(rng)).save(root / split / label / f"{i}.png")
    # An exact copy, a resized JPEG re-encoding and a noised JPEG copy of training images in test.
    shutil.copy(root / "train" / "a" / "0.png", root / "test" / "a" / "copy.png")
    im = Image.open(root / "train" / "b" / "1.png").resize((40, 40), Image.BICUBIC)
    im.save(root / "test" / "b" / "reencoded.jpg", quality=70)
    noised = np.asarray(Image.open(root / "train" / "a" / "2.png")) + rng.normal(0, 3, (48, 48, 3))
    Image.fromarray(noised.clip(0, 255).astype(np.uint8)).save(root / "test" / "a" / "noised.jpg", quality=90)
    return root


def _leakage_csv(run_dir):
    return {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(run_dir / "leakage.csv"))}


def test_identical_and_near_duplicate_images_are_reported(leaky, tmp_path, capsys):
    prepare(DataConfig(path=str(leaky), image_size=32, num_workers=0), RunFolder(tmp_path))
    out = capsys.readouterr().out
    assert "3 val/test image(s) are also in an earlier split" in out
    assert "19 val/test image(s) compared with the earlier splits: 19 by file content, perceptual hash" in out
    rows = _leakage_csv(tmp_path)
    assert set(rows) == {"copy.png", "reencoded.jpg", "noised.jpg"}
    copy, reencoded, noised = rows["copy.png"], rows["reencoded.jpg"], rows["noised.jpg"]
    assert copy["kind"] == "identical file" and copy["other_path"].endswith("train/a/0.png")
    assert reencoded["kind"] == "near-duplicate" and reencoded["other_path"].endswith("train/b/1.png")
    assert noised["kind"] == "near-duplicate" and noised["other_path"].endswith("train/a/2.png")
    assert 0 < float(noised["pixel_difference"]) < 0.25 and float(copy["pixel_difference"]) == 0
    summary = json.loads((tmp_path / "leakage.json").read_text())
    assert (summary["images"], summary["sparse"], summary["duplicates"]) == (19, 0, 3)


def test_the_pixels_confirm_every_hash_match(leaky, tmp_path):
    """With a hash threshold that lets every pair through, only the copies pass the pixel check."""
    prepare(DataConfig(path=str(leaky), image_size=32, num_workers=0, leakage_max_distance=256), RunFolder(tmp_path))
    assert set(_leakage_csv(tmp_path)) == {"copy.png", "reencoded.jpg", "noised.jpg"}
    assert json.loads((tmp_path / "leakage.json").read_text())["rejected"] == 16  # every other val/test image


def _dot(size, x, y, peak=255):
    """A point source on a black sky: one bright pixel, slightly blurred."""
    img = np.zeros((size, size), np.uint8)
    img[y, x], img[y, x + 1], img[y + 1, x] = peak, peak // 3, peak // 3
    return img


def test_dots_on_a_black_sky_are_skipped_as_sparse_not_flagged(tmp_path, capsys):
    """Point sources at the centre of every image (as in FIRST) hash alike whatever their class;
    elsewhere they differ only in where the dot is. Neither is a duplicate."""
    rng = np.random.default_rng(3)
    root = tmp_path / "data"
    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        for label in ("compact", "fri"):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                x, y = (15, 15) if i % 2 else rng.integers(4, 26, 2)
                Image.fromarray(_dot(32, x, y, int(rng.integers(150, 256)))).save(root / split / label / f"{i}.png")
    (tmp_path / "run").mkdir()
    prepare(DataConfig(path=str(root), image_size=32, num_workers=0, leakage="fail"), RunFolder(tmp_path / "run"))
    assert not (tmp_path / "run" / "leakage.csv").exists()
    summary = json.loads((tmp_path / "run" / "leakage.json").read_text())
    assert (summary["images"], summary["sparse"], summary["duplicates"]) == (12, 12, 0)
    assert "12 by file content only (too little structure to hash" in capsys.readouterr().out


def test_sparse_means_few_pixels_hold_the_contrast():
    rng = np.random.default_rng(4)
    flat = np.full((32, 32), 40, np.uint8)
    noise_only = (40 + rng.normal(0, 0.4, (32, 32))).round().astype(np.uint8)  # under one grey level RMS
    dot = _dot(32, 10, 20)
    blob = _blob(rng, 32)[..., 0]
    assert too_sparse(np.stack([flat, noise_only, dot, blob])).tolist() == [True, True, True, False]


def test_leakage_can_fail_the_run_or_be_switched_off(leaky, tmp_path, capsys):
    with pytest.raises(DataError, match="also in an earlier split.*data.leakage=warn"):
        prepare(DataConfig(path=str(leaky), image_size=32, num_workers=0, leakage="fail"), RunFolder(tmp_path))
    (tmp_path / "off").mkdir()
    prepare(DataConfig(path=str(leaky), image_size=32, num_workers=0, leakage="off"), RunFolder(tmp_path / "off"))
    assert "earlier split" not in capsys.readouterr().out


def test_a_test_image_that_is_also_in_val_is_reported(leaky, tmp_path):
    shutil.copy(leaky / "val" / "b" / "2.png", leaky / "test" / "b" / "from_val.png")
    prepare(DataConfig(path=str(leaky), image_size=32, num_workers=0), RunFolder(tmp_path))
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(tmp_path / "leakage.csv"))}
    assert rows["from_val.png"]["other_split"] == "val" and rows["from_val.png"]["kind"] == "identical file"


def test_clean_data_passes_with_a_summary(leaky, tmp_path, capsys):
    for name in ("a/copy.png", "b/reencoded.jpg", "a/noised.jpg"):
        (leaky / "test" / name).unlink()
    prepare(DataConfig(path=str(leaky), image_size=32, num_workers=0, leakage="fail"), RunFolder(tmp_path))
    assert not (tmp_path / "leakage.csv").exists()
    assert "Leakage guard: 16 val/test image(s) compared" in capsys.readouterr().out
