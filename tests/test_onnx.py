"""ONNX export: a real ONNX Runtime session reproduces the PyTorch model and its decision rule."""

from __future__ import annotations

import csv
import json

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import FAST, write_folder

from galaxytune.cli import main
from galaxytune.errors import ModelError
from galaxytune.inference.onnx import INFO_KEY
from galaxytune.inference.predict import Predictor


@pytest.fixture(scope="module")
def run(tmp_path_factory, weights_file):
    root = tmp_path_factory.mktemp("onnx")
    for split, n, seed in (("train", 12, 0), ("val", 6, 1), ("test", 6, 2)):
        write_folder(root / "data" / split, {"red": n, "green": n, "blue": n}, seed)
    assert main(["train", "--data", str(root / "data"), "--out", str(root / "run"), "--weights", str(weights_file),
                 *FAST, "transfer.epochs=2", "finetune.epochs=1"]) == 0
    return root


def test_exported_model_matches_pytorch_in_onnx_runtime(run, capsys):
    assert main(["export", "--model", str(run / "run")]) == 0
    path = run / "run" / "models" / "model.onnx"
    assert path.is_file() and str(path) in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    info = json.loads(session.get_modelmeta().custom_metadata_map[INFO_KEY])
    assert info["classes"] == ["blue", "green", "red"] and info["image_size"] == 32
    torch_model = Predictor.load(run / "run")
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)  # another batch size than at export
    logits, probs = session.run(None, {"images": images.numpy()})
    expected_logits = torch_model.logits(images)
    np.testing.assert_allclose(logits, expected_logits, atol=1e-4)
    np.testing.assert_allclose(probs, torch_model.info.rule.probabilities(expected_logits), atol=1e-5)
    assert torch_model.info.rule.temperature != 1.0  # the rule is really in the graph, not the identity


def test_predict_and_evaluate_accept_the_onnx_file(run, tmp_path, capsys):
    onnx_file = tmp_path / "galaxies.onnx"
    assert main(["export", "--model", str(run / "run"), "--out", str(onnx_file)]) == 0
    outputs = {}
    for name, model in (("torch", run / "run"), ("onnx", onnx_file)):
        out = tmp_path / f"{name}.csv"
        assert main(["predict", "--model", str(model), str(run / "data" / "test"), "--out", str(out), "--tta"]) == 0
        outputs[name] = list(csv.DictReader(open(out)))
    assert [r["predicted_class"] for r in outputs["onnx"]] == [r["predicted_class"] for r in outputs["torch"]]
    for a, b in zip(outputs["onnx"], outputs["torch"]):
        assert float(a["p_red"]) == pytest.approx(float(b["p_red"]), abs=1e-4)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(onnx_file), "--data", str(run / "data"), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 18


def test_a_file_that_is_not_a_galaxytune_onnx_model_is_refused(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="broken.onnx"):
        Predictor.load(bad)
    assert main(["predict", "--model", str(bad), str(tmp_path), "--out", str(tmp_path / "p.csv")]) == 2
    assert "broken.onnx" in capsys.readouterr().err and not (tmp_path / "p.csv").exists()
