"""The leakage guard finds val/test images that are also in train."""

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from galaxytune.config import DataConfig
from galaxytune.data.prepare import prepare
from galaxytune.errors import DataError


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
    # An exact copy, and a resized JPEG re-encoding, of training images in test.
    shutil.copy(root / "train" / "a" / "0.png", root / "test" / "a" / "copy.png")
    im = Image.open(root / "train" / "b" / "1.png").resize((40, 40), Image.BICUBIC)
    im.save(root / "test" / "b" / "reencoded.jpg", quality=70)
    return root


def test_identical_and_near_duplicate_images_are_reported(leaky, tmp_path, capsys):
    prepare(DataConfig(path=str(leaky), image_size=32, num_workers=0), tmp_path)
    assert "2 val/test image(s) are also in an earlier split" in capsys.readouterr().out
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(tmp_path / "leakage.csv"))}
    assert set(rows) == {"copy.png", "reencoded.jpg"}
    copy, reencoded = rows["copy.png"], rows["reencoded.jpg"]
    assert copy["kind"] == "identical file" and copy["other_path"].endswith("train/a/0.png")
    assert reencoded["kind"] == "near-duplicate" and reencoded["other_path"].endswith("train/b/1.png")


def test_leakage_can_fail_the_run_or_be_switched_off(leaky, tmp_path, capsys):
    with pytest.raises(DataError, match="also in an earlier split.*data.leakage=warn"):
        prepare(DataConfig(path=str(leaky), image_size=32, num_workers=0, leakage="fail"), tmp_path)
    (tmp_path / "off").mkdir()
    prepare(DataConfig(path=str(leaky), image_size=32, num_workers=0, leakage="off"), tmp_path / "off")
    assert "earlier split" not in capsys.readouterr().out


def test_a_test_image_that_is_also_in_val_is_reported(leaky, tmp_path):
    shutil.copy(leaky / "val" / "b" / "2.png", leaky / "test" / "b" / "from_val.png")
    prepare(DataConfig(path=str(leaky), image_size=32, num_workers=0), tmp_path)
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(open(tmp_path / "leakage.csv"))}
    assert rows["from_val.png"]["other_split"] == "val" and rows["from_val.png"]["kind"] == "identical file"


def test_clean_data_passes_silently(leaky, tmp_path, capsys):
    (leaky / "test" / "a" / "copy.png").unlink()
    (leaky / "test" / "b" / "reencoded.jpg").unlink()
    prepare(DataConfig(path=str(leaky), image_size=32, num_workers=0, leakage="fail"), tmp_path)
    assert not (tmp_path / "leakage.csv").exists()
