"""Training from vote tables: soft targets (the vote fractions themselves, scored as classes and
by vote RMSE), and vote-rule labels carried from training to evaluation on other data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, draw, write_folder
from PIL import Image

import galaxytune
from galaxytune.cli import main
from galaxytune.config import LabelsConfig, load_config
from galaxytune.data.prepare import prepare
from galaxytune.data.transforms import dihedral_targets
from galaxytune.data.vote_labels import by_fractions
from galaxytune.errors import ConfigError
from galaxytune.evaluation.stage_table import vote_rmse

SOFT = {"red": "f_red", "green": "f_green", "blue": "f_blue"}


def test_fractions_are_renormalised_and_the_top_answer_is_the_class():
    values = {"f_red": np.array([0.6, 0.1, np.nan, 0.0]), "f_green": np.array([0.2, 0.5, np.nan, 0.0]),
              "f_blue": np.array([0.0, 0.2, np.nan, 0.0])}
    out = by_fractions(LabelsConfig(soft=SOFT), values, None, "")
    assert out.labels == ["red", "green", None, None]
    assert out.dropped == {"with no votes on f_red, f_green, f_blue": 2}
    # Columns in sorted class order (blue, green, red), each row summing to 1.
    np.testing.assert_allclose(out.fractions[0], [0.0, 0.25, 0.75])
    np.testing.assert_allclose(out.fractions[1], [0.25, 0.625, 0.125])


def test_mirrored_images_get_their_fraction_columns_swapped():
    y = torch.tensor([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]])
    which = torch.tensor([0, 4])  # identity, then a mirror flip
    mirror = torch.tensor([1, 0, 2])  # classes 0 and 1 are mirror images
    out = dihedral_targets(y, which, mirror)
    assert torch.equal(out, torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]]))


def test_vote_rmse():
    assert vote_rmse(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])) == pytest.approx(0.5)


def _vote_table(root, n_per_class: int = 16, seed: int = 0):
    """A vote table whose fractions favour each image's colour, 70/20/10."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    rows = []
    for label in SOFT:
        for i in range(n_per_class):
            name = f"img/{label}_{i}.png"
            Image.fromarray(draw(label, rng)).save(root / name)
            others = [c for c in SOFT if c != label]
            rows.append({"filename": name, f"f_{label}": 0.7, f"f_{others[0]}": 0.2, f"f_{others[1]}": 0.1})
    with open(root / "votes.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["filename", "f_red", "f_green", "f_blue"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "votes.csv"


def test_training_on_vote_fractions_reports_their_rmse(tmp_path, weights_file):
    table = _vote_table(tmp_path / "data")
    overrides = [f"data.labels.soft.{k}={v}" for k, v in SOFT.items()]
    data = prepare(load_config(overrides=[*overrides, f"data.path={table}", "data.image_size=32"]).data, None)
    assert data.classes == ["blue", "green", "red"]
    x, target = data.sets["train"][0]
    assert target.dtype == torch.float32 and target.sum().item() == pytest.approx(1.0)

    run = tmp_path / "run"
    assert main(["train", "--data", str(table), "--out", str(run), "--weights", str(weights_file),
                 *FAST, *overrides, "trainer.monitor=loss", "decision.tta=false"]) == 0
    # Early stopping, checkpoint and guard followed the cross-entropy to the fractions (val_loss).
    assert all(r["val_loss"] for r in csv.DictReader(open(run / "metrics.csv")))
    rows = {r["stage"]: r for r in csv.DictReader(open(run / "stage_table.csv"))}
    assert list(rows) == ["transfer", "finetune", "decision"]
    # The reported RMSE is that of the saved model's probabilities against each test galaxy's votes.
    outputs = np.load(run / "stage_outputs.npz")
    votes = {row["filename"]: row for row in csv.DictReader(open(table))}
    fractions = np.array([[float(votes[str(Path(p).relative_to(table.parent))][f"f_{c}"]) for c in data.classes]
                          for p in outputs["test_paths"]])
    probs = galaxytune.load(run).info.rule.probabilities(outputs["decision_test"])
    assert float(rows["decision"]["test_vote_rmse"]) == pytest.approx(vote_rmse(probs, fractions))
    assert "Vote-fraction RMSE (val / test)" in (run / "stage_table.md").read_text()


def test_soft_targets_are_one_question_and_not_yet_for_cv(tmp_path, capsys):
    with pytest.raises(ConfigError, match="more than one of rules, binary and soft"):
        load_config(overrides=["data.labels.soft.a=x", "data.labels.soft.b=y", "data.labels.binary.column=z"])
    with pytest.raises(ConfigError, match="two or more class names"):
        load_config(overrides=["data.labels.soft.a=x"])
    table = _vote_table(tmp_path / "data", 4)
    code = main(["cv", "--data", str(table), "--out", str(tmp_path / "cv"), "--folds", "2",
                 *[f"data.labels.soft.{k}={v}" for k, v in SOFT.items()]])
    assert code == 2 and "does not carry soft targets" in capsys.readouterr().err


def test_evaluate_reads_other_data_with_the_runs_vote_rules(tmp_path, weights_file, capsys):
    rules = ['data.labels.rules=[{red: "f_red >= 0.5"}, {green: "f_green >= 0.5"}, {blue: otherwise}]']
    table = _vote_table(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--data", str(table), "--out", str(run), "--weights", str(weights_file), *FAST, *rules]) == 0
    other = _vote_table(tmp_path / "other", 3, seed=5)  # a vote table, no label column: only the rules can label it
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run), "--data", str(other), "--json"]) == 0
    out = capsys.readouterr().out
    assert "9 of 9 galaxies labelled (blue 3, green 3, red 3)" in out
    assert json.loads(out.strip().splitlines()[-1])["n"] == 9
    # Data that carries its labels is read as such, not through the run's vote rules.
    write_folder(tmp_path / "folder", {"red": 2, "green": 2, "blue": 2}, seed=7)
    labelled = tmp_path / "folder" / "labels.csv"
    labelled.write_text("filename,label\n" + "".join(f"{c}/{c}_0.png,{c}\n" for c in SOFT))
    for data in (tmp_path / "folder", labelled):
        assert main(["evaluate", "--model", str(run), "--data", str(data), "--json"]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] in (6, 3)


def test_temperature_is_calibrated_to_vote_fractions_with_soft_targets():
    from scipy.special import softmax

    from galaxytune.decision import fit_temperature

    logits = np.random.default_rng(0).normal(0, 3, (500, 3))
    fractions = softmax(logits / 3, axis=1)  # the volunteers are less sure than the logits
    top = fractions.argmax(axis=1)
    assert fit_temperature(logits, top, fractions) == pytest.approx(3.0, rel=0.01)
    assert fit_temperature(logits, top) < 0.1  # fitted to the top answers alone it sharpens instead
