"""The built-in GalSim dataset and the demo command that trains on it."""

import builtins
import csv
import json

import numpy as np
import pytest
from conftest import FAST
from PIL import Image

from galaxytune.datasets import synthetic
from galaxytune.datasets.synthetic import CLASSES, SyntheticSpec, generate
from galaxytune.errors import DataError


def test_every_class_is_drawn_in_colour_and_deterministically(tmp_path):
    spec = SyntheticSpec(n_per_class=4, image_size=32, seed=7)
    a = generate(tmp_path / "a", spec, workers=1)
    b = generate(tmp_path / "b", spec, workers=1)
    rows = list(csv.DictReader(open(a / "labels.csv")))
    assert len(rows) == 20 and {r["label"] for r in rows} == set(CLASSES)
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    for row in rows:
        pa, pb = np.asarray(Image.open(a / row["filename"])), np.asarray(Image.open(b / row["filename"]))
        assert pa.shape == (32, 32, 3) and np.array_equal(pa, pb)
    # Ellipticals are red (i band brighter than g), spirals bluer: colour carries physics.
    def redness(label):
        pix = [np.asarray(Image.open(a / r["filename"]), dtype=float) for r in rows if r["label"] == label]
        return np.mean([p[..., 0].sum() / max(p[..., 2].sum(), 1) for p in pix])
    assert redness("elliptical") > redness("spiral")


def test_other_seed_gives_other_images_and_cache_is_reused(tmp_path):
    generate(tmp_path / "a", SyntheticSpec(n_per_class=1, image_size=32, seed=0), workers=1)
    first = tmp_path / "a" / "test" / CLASSES[0] / "000000.png"
    stamp = first.stat().st_mtime_ns
    generate(tmp_path / "a", SyntheticSpec(n_per_class=1, image_size=32, seed=0), workers=1)
    assert first.stat().st_mtime_ns == stamp  # same spec: nothing redrawn
    # Image 0 under seed 0 is the file; under seed 1 the same index and class is another galaxy.
    same = synthetic._draw_one(0, CLASSES[0], SyntheticSpec(image_size=32, seed=0))
    other = synthetic._draw_one(0, CLASSES[0], SyntheticSpec(image_size=32, seed=1))
    stored = np.asarray(Image.open(tmp_path / "a" / "test" / CLASSES[0] / "000000.png"))
    assert np.array_equal(same, stored) and not np.array_equal(other, stored)


def test_missing_galsim_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_galsim(name, *args, **kwargs):
        if name == "galsim":
            raise ImportError("no galsim")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_galsim)
    with pytest.raises(DataError, match="pip install galsim"):
        synthetic._galsim()


def test_demo_runs_every_stage_offline(tmp_path, capsys):
    from galaxytune.demo import run_demo

    result = run_demo(tmp_path / "run", tmp_path / "data", n_per_class=12, overrides=FAST, workers=1)
    assert "from random weights" in capsys.readouterr().out  # no hub here
    # TTA has a row only where it beat the plain logits on validation (decision.tta: auto).
    stages = [r["stage"] for r in result.table]
    assert [s for s in stages if s != "tta"] == ["transfer", "finetune", "decision"] and len(stages) <= 4
    assert (result.run_dir / "models" / "model.safetensors").is_file()
    meta = json.loads((result.run_dir / "models" / "model.json").read_text())
    assert meta["architecture"] == "resnet18"  # the from-scratch fallback
