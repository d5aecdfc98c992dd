"""The command line end to end: train, evaluate and predict on tiny data the test makes."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from conftest import FAST, write_folder
from safetensors.torch import load_file

from galaxytune.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory, weights_file):
    """One train run, shared by the tests that use its outputs."""
    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    for split, n, seed in (("train", 16, 0), ("val", 6, 1), ("test", 6, 2)):
        write_folder(data / split, {"red": n, "green": n, "blue": n}, seed)
    run = root / "run"
    code = main(["train", "--data", str(data), "--out", str(run), "--weights", str(weights_file), *FAST])
    assert code == 0
    return data, run


def test_train_writes_a_complete_run_folder(trained, weights_file):
    data, run = trained
    for name in ("config.yaml", "metrics.csv", "splits.csv", "stage_table.csv", "stage_table.md",
                 "stage_outputs.npz", "models/model.safetensors", "models/model.json", "report.html"):
        assert (run / name).is_file(), name
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["weights"] == str(weights_file) and cfg["data"]["path"] == str(data)
    stages = [r["stage"] for r in csv.DictReader(open(run / "stage_table.csv"))]
    assert stages == ["transfer", "finetune", "decision"]
    epochs = list(csv.DictReader(open(run / "metrics.csv")))
    assert {r["stage"] for r in epochs} == {"transfer", "finetune"}
    assert all(r["val_macro_f1"] and r["train_loss"] for r in epochs)
    meta = json.loads((run / "models/model.json").read_text())
    assert meta["classes"] == ["blue", "green", "red"] and meta["image_size"] == 32
    assert meta["mean"] == [0.5] * 3 and len(meta["decision"]["offsets"]) == 3
    assert any(k.startswith("backbone.") for k in load_file(str(run / "models/model.safetensors")))
    assert not list(run.rglob("*.partial"))
    summary = {s["stage"]: s for s in json.loads((run / "stages.json").read_text())}
    assert summary["transfer"]["epochs"] == 4 and summary["finetune"]["epochs"] == 2  # FAST: no early stop yet
    assert 0 < summary["transfer"]["trainable_params"] < summary["finetune"]["trainable_params"]
    assert summary["finetune"]["seconds_per_epoch"] > 0 and summary["finetune"]["adapter_bytes"] is None
    assert summary["finetune"]["kept_incoming"] == (not summary["finetune"]["beat_incoming"])  # guard on


def test_evaluate_json_matches_the_stage_table(trained, capsys):
    data, run = trained
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run), "--data", str(data), "--split", "test", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["n"] == 18
    assert (run / "evaluation-data-test" / "report.html").is_file()
    final = list(csv.DictReader(open(run / "stage_table.csv")))[-1]
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert metrics[key] == pytest.approx(float(final[f"test_{key}"]), abs=1e-6)


def test_predict_writes_probabilities_after_the_decision_rule(trained, tmp_path):
    data, run = trained
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(run), str(data / "test"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 18
    assert set(rows[0]) == {"path", "predicted_class", "p_blue", "p_green", "p_red"}
    for row in rows:
        probs = {c: float(row[f"p_{c}"]) for c in ("blue", "green", "red")}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert row["predicted_class"] == max(probs, key=probs.get)


def test_csv_catalog_columns_work_for_evaluate_and_predict(trained, tmp_path, capsys):
    data, run = trained
    with open(tmp_path / "cat.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img", "morph"])
        for p in sorted((data / "test").rglob("*.png")):
            w.writerow([str(p), p.parent.name])
    capsys.readouterr()
    args = ["--path-column", "img", "--label-column", "morph"]
    assert main(["evaluate", "--model", str(run), "--data", str(tmp_path / "cat.csv"), "--json", *args]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 18
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(run), str(tmp_path / "cat.csv"), "--out", str(out), *args[:2]]) == 0
    assert len(list(csv.DictReader(open(out)))) == 18


def test_train_from_csv_catalog_with_stages_switched_off(tmp_path, weights_file, capsys):
    write_folder(tmp_path / "img", {"a": 14, "b": 14})
    with open(tmp_path / "cat.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "cls"])
        for p in sorted((tmp_path / "img").rglob("*.png")):
            w.writerow([p.relative_to(tmp_path), p.parent.name])
    run = tmp_path / "run"
    code = main(["train", "--data", str(tmp_path / "cat.csv"), "--out", str(run), "--weights", str(weights_file),
                 "--path-column", "file", "--label-column", "cls", *FAST, "finetune.enabled=false",
                 "decision.tta=false"])
    assert code == 0
    table = list(csv.DictReader(open(run / "stage_table.csv")))
    assert [r["stage"] for r in table] == ["transfer", "decision"]
    splits = {r["split"] for r in csv.DictReader(open(run / "splits.csv"))}
    assert splits == {"train", "val", "test"}
    # On the run's own data, evaluate scores the carved test split, as the stage table did.
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run), "--data", str(tmp_path / "cat.csv"), "--json",
                 "--path-column", "file", "--label-column", "cls"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["n"] == int(table[-1]["test_n"])
    assert metrics["macro_f1"] == pytest.approx(float(table[-1]["test_macro_f1"]), abs=1e-6)


def test_a_run_folder_is_never_silently_mixed_with_another(trained, capsys, weights_file):
    data, run = trained
    assert main(["train", "--data", str(data), "--out", str(run), "--weights", str(weights_file), *FAST]) == 2
    assert "already holds a run" in capsys.readouterr().err and (run / "report.html").is_file()


def test_paths_from_flags_are_taken_literally(tmp_path, capsys):
    odd = tmp_path / "zoo: v2 #1"
    assert main(["train", "--data", str(odd), "--out", str(tmp_path / "r")]) == 2
    assert f"Data path {odd} does not exist" in capsys.readouterr().err


def test_user_errors_give_one_clear_message(tmp_path, capsys, weights_file):
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "finetune.lrate=1"]) == 2
    assert "Unknown config key 'finetune.lrate'" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds no saved model" in err and "Traceback" not in err
    write_folder(tmp_path / "d", {"a": 5})
    assert main(["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--weights",
                 str(weights_file), *FAST]) == 2
    assert "only one class" in capsys.readouterr().err


def test_tta_predictions_do_not_depend_on_orientation(trained, tmp_path):
    import numpy as np
    from PIL import Image

    import galaxytune

    _, run = trained
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)  # the model's input size: no resampling
    for k in range(4):
        Image.fromarray(np.rot90(pixels, k).copy()).save(tmp_path / f"rot{k}.png")
    Image.fromarray(pixels[:, ::-1].copy()).save(tmp_path / "flip.png")
    model = galaxytune.load(run)
    plain = model.predict(tmp_path).probabilities
    tta = model.predict(tmp_path, tta=True).probabilities
    assert np.allclose(tta, tta[0], atol=1e-5)  # all five orientations: one prediction
    assert not np.allclose(plain, plain[0], atol=1e-5)  # without TTA they differ
