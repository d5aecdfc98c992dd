"""Label-aware rotations and flips: mirror swaps in training targets, in TTA, in saved models."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import FAST, write_folder
from torch import nn

from galaxytune.cli import main
from galaxytune.config import load_config
from galaxytune.data.transforms import N_DIHEDRAL, dihedral, mirror_permutation, random_dihedral
from galaxytune.errors import ConfigError
from galaxytune.inference.predict import Predictor
from galaxytune.inference.saved import ModelInfo
from galaxytune.training.module import ClassifierModule

CHIRAL = ["spiral_clockwise", "spiral_anticlockwise", "elliptical"]
SWAP = [["spiral_clockwise", "spiral_anticlockwise"]]
L_SHAPE = [(1, 1), (2, 1), (3, 1), (3, 2)]  # chiral: no quarter turn makes it its mirror image


def shape_image(cells: list[tuple[int, int]], size: int = 8) -> torch.Tensor:
    image = torch.zeros(3, size, size)
    for row, col in cells:
        image[:, row, col] = 1.0
    return image


class ChiralityNet(nn.Module):
    """Logits (clockwise, anticlockwise, elliptical) from the best match of the image with an L
    shape or its mirror image over the 4 quarter turns: the same for every rotation of the
    input, and a mirror flip of the input swaps the first two logits (like a real galaxy)."""

    def __init__(self):
        super().__init__()
        self.template = nn.Parameter(shape_image(L_SHAPE)[0], requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x.mean(1)

        def match(template):
            return torch.stack([(grey * torch.rot90(template, k)).sum((1, 2)) for k in range(4)]).amax(0)

        return torch.stack([match(self.template), match(self.template.flip(-1)), torch.zeros(len(x))], 1)


def predictor(mirror_swap: list[list[str]], tta: bool = False) -> Predictor:
    info = ModelInfo("stub", CHIRAL, 8, 1.0, [0.0] * 3, [1.0] * 3, mirror_swap=mirror_swap, tta=tta)
    return Predictor(ChiralityNet(), info)


@pytest.fixture
def spirals() -> torch.Tensor:
    """A clockwise spiral (the L shape) and an anticlockwise one (its mirror image), turned."""
    clockwise = shape_image(L_SHAPE)
    return torch.stack([torch.rot90(clockwise, 1, (1, 2)), torch.rot90(clockwise.flip(-1), 3, (1, 2))])


def test_mirror_permutation_swaps_declared_pairs_only():
    assert mirror_permutation(CHIRAL, SWAP) == [1, 0, 2]
    assert mirror_permutation(CHIRAL, []) == [0, 1, 2]


def test_mirror_swap_names_must_be_classes_in_one_pair():
    with pytest.raises(ConfigError, match="'spiral_cw', not a class of the data.*spiral_clockwise, spiral_anti"):
        mirror_permutation(CHIRAL, [["spiral_cw", "spiral_anticlockwise"]])
    with pytest.raises(ConfigError, match="another pair"):
        mirror_permutation(CHIRAL, [SWAP[0], ["spiral_clockwise", "elliptical"]])


@pytest.mark.parametrize("value", ["spiral_clockwise", "[[a, b, c]]", "[[a, a]]", "[[1, 2]]", "[a, b]"])
def test_config_rejects_malformed_mirror_swap(value):
    with pytest.raises(ConfigError, match="finetune.mirror_swap"):
        load_config(overrides=[f"finetune.mirror_swap={value}"])
    assert load_config(overrides=["finetune.mirror_swap=[[a, b]]"]).finetune.mirror_swap == [["a", "b"]]


def test_random_dihedral_reports_the_transform_of_each_image():
    x = torch.rand(32, 3, 5, 5)
    out, which = random_dihedral(x, torch.Generator().manual_seed(0))
    assert set(which.tolist()) == set(range(N_DIHEDRAL))
    for image, transformed, k in zip(x, out, which.tolist()):
        assert torch.equal(transformed, dihedral(image, k))


@pytest.mark.parametrize("mirror, expected", [(None, [0, 1, 2]), ([1, 0, 2], [1, 0, 2])])
def test_training_swaps_targets_of_mirrored_images_only_when_declared(mirror, expected):
    torch.manual_seed(0)
    module = ClassifierModule(nn.Identity(), 3, [], augment=True, mirror=mirror)
    # Every image is the same L shape: its orientation after augmentation says which transform it got.
    x = shape_image(L_SHAPE).expand(64, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 2] * 16)
    out, targets = module.augment_batch(x, y)
    flipped = torch.tensor([any(torch.equal(o, dihedral(x[0], k)) for k in range(4, N_DIHEDRAL)) for o in out])
    assert 0 < flipped.sum() < len(x)
    assert torch.equal(targets[~flipped], y[~flipped])
    assert torch.equal(targets[flipped], torch.tensor(expected)[y[flipped]])


def test_tta_keeps_chirality_apart_only_with_the_swap(spirals):
    one_view = predictor(SWAP).logits(spirals, tta=False)
    assert one_view[:, :2].argmax(1).tolist() == [0, 1]  # the stub tells the spirals apart
    blurred = predictor([]).logits(spirals, tta=True)
    np.testing.assert_allclose(blurred[:, 0], blurred[:, 1])  # 4 views vote clockwise, 4 anticlockwise
    kept = predictor(SWAP).logits(spirals, tta=True)
    np.testing.assert_allclose(kept, one_view, atol=1e-6)  # each mirrored view swapped back


def test_model_that_expects_tta_uses_it_unless_turned_off(spirals):
    model = predictor([], tta=True)
    np.testing.assert_allclose(model.logits(spirals), model.logits(spirals, tta=True))
    assert not np.allclose(model.logits(spirals, tta=False), model.logits(spirals, tta=True))
    assert not predictor([]).uses_tta(None)


@pytest.fixture(scope="module")
def tta_run(tmp_path_factory, weights_file):
    """A run with a declared mirror swap and the decision rule fitted on TTA logits."""
    root = tmp_path_factory.mktemp("tta")
    for split, n, seed in (("train", 16, 0), ("val", 6, 1), ("test", 6, 2)):
        write_folder(root / "data" / split, {"red": n, "green": n, "blue": n}, seed)
    args = ["--weights", str(weights_file), *FAST, "finetune.mirror_swap=[[red, green]]", "decision.tta=true"]
    assert main(["train", "--data", str(root / "data"), "--out", str(root / "run"), *args]) == 0
    return root / "data", root / "run"


def test_decision_rule_is_fitted_on_tta_logits_and_saved_model_expects_tta(tta_run):
    _, run = tta_run
    assert [r["stage"] for r in csv.DictReader(open(run / "stage_table.csv"))] == [
        "transfer", "finetune", "tta", "decision"
    ]
    with np.load(run / "stage_outputs.npz") as outputs:
        np.testing.assert_array_equal(outputs["decision_val"], outputs["tta_val"])
        assert not np.allclose(outputs["tta_val"], outputs["finetune_val"])
    meta = json.loads((run / "models" / "model.json").read_text())
    assert meta["mirror_swap"] == [["red", "green"]] and meta["tta"] is True
    model = Predictor.load(run)
    assert model.info.mirror == [0, 2, 1]  # classes are sorted: blue, green, red
    pixels = torch.rand(4, 3, 32, 32)
    np.testing.assert_allclose(model.logits(pixels), model.logits(pixels, tta=True))


def test_cli_predicts_with_tta_by_default_and_no_tta_turns_it_off(tta_run, tmp_path):
    data, run = tta_run

    def probabilities(name, *flags):
        out = tmp_path / f"{name}.csv"
        assert main(["predict", "--model", str(run), str(data / "test"), "--out", str(out), *flags]) == 0
        return np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in csv.DictReader(open(out))])

    default, on, off = probabilities("default"), probabilities("on", "--tta"), probabilities("off", "--no-tta")
    np.testing.assert_allclose(default, on, atol=1e-6)
    assert not np.allclose(default, off, atol=1e-4)


def test_models_saved_without_the_new_keys_load_without_tta(tta_run):
    _, run = tta_run
    meta_path = run / "models" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k not in ("mirror_swap", "tta")}))
    try:
        model = Predictor.load(run)
        assert model.info.mirror == [0, 1, 2] and not model.uses_tta(None)
    finally:
        meta_path.write_text(json.dumps(meta))


def test_unknown_class_in_mirror_swap_stops_before_training(tmp_path, weights_file, capsys):
    write_folder(tmp_path / "data", {"red": 12, "green": 12})
    args = ["--weights", str(weights_file), *FAST, "finetune.mirror_swap=[[red, blue]]"]
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *args]) == 2
    assert "'blue', not a class of the data (classes: green, red)" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()
