"""ONNX export: a real ONNX Runtime session reproduces the PyTorch model and its decision rule."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import FAST, write_folder

from galaxytune.cli import main
from galaxytune.errors import ModelError
from galaxytune.inference.onnx import INFO_KEY, export_onnx
from galaxytune.inference.predict import Predictor
from galaxytune.inference.quantize import REPORT_KEY


@pytest.fixture(scope="module")
def run(tmp_path_factory, weights_file):
    root = tmp_path_factory.mktemp("onnx")
    for split, n, seed in (("train", 12, 0), ("val", 6, 1), ("test", 6, 2)):
        write_folder(root / "data" / split, {"red": n, "green": n, "blue": n}, seed)
    assert main(["train", "--data", str(root / "data"), "--out", str(root / "run"), "--weights", str(weights_file),
                 *FAST, "transfer.epochs=2", "finetune.epochs=1"]) == 0
    return root


@pytest.fixture(scope="module")
def exported(run):
    """``galaxytune export --int8`` of the run, once for the module: what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", "--model", str(run / "run"), "--int8", "--calibration", "100"]) == 0
    return printed.getvalue()


def test_exported_model_matches_pytorch_in_onnx_runtime(run, exported):
    path = run / "run" / "models" / "model.onnx"
    assert path.is_file() and str(path) in exported
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


def test_a_model_with_a_tta_rule_gets_its_tta_inside_the_graph(tmp_path):
    from galaxytune.inference.saved import ModelInfo, save_model
    from galaxytune.models.backbone import create_classifier

    torch.manual_seed(0)
    net = create_classifier("resnet18", 3, weights="none").eval()
    torch.nn.init.normal_(net.head.weight, std=0.5)  # logits that depend on orientation
    info = ModelInfo("resnet18", ["a", "b", "c"], 32, 1.0, [0.5] * 3, [0.5] * 3,
                     decision={"temperature": 1.5, "offsets": [0.2, -0.1, -0.1]},
                     mirror_swap=[["a", "b"]], tta=True)
    save_model(net, info, tmp_path / "models")
    path = export_onnx(tmp_path)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    logits, probs = onnxruntime.InferenceSession(str(path)).run(None, {"images": images.numpy()})
    predictor = Predictor.load(tmp_path)  # the PyTorch path, TTA on as the model asks
    expected = predictor.info.rule.probabilities(predictor.logits(images, tta=True))
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    single_view = predictor.info.rule.probabilities(predictor.logits(images, tta=False))
    assert np.abs(single_view - expected).max() > 1e-3  # TTA changes the answer: the check has teeth
    np.testing.assert_allclose(logits, predictor.logits(images, tta=False), atol=1e-4)
    import onnx

    convs = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    assert sum(node.op_type == "Conv" for node in onnx.load(str(path)).graph.node) == convs  # one network, not 9


def test_int8_export_is_calibrated_on_validation_images_and_checked_on_held_back_ones(run, exported, tmp_path):
    import onnx

    fp32, int8 = run / "run" / "models" / "model.onnx", run / "run" / "models" / "model.int8.onnx"
    assert int8.is_file() and str(int8) in exported
    assert "9 held-back validation image(s)" in exported and "agrees with fp32" in exported
    model = onnx.load(str(int8))
    meta = {p.key: p.value for p in model.metadata_props}
    report = json.loads(meta[REPORT_KEY])
    assert (report["calibration_images"], report["held_back_images"]) == (9, 9)  # 18 val images, halved
    assert 0 <= report["int8_accuracy"] <= 1 and 0 <= report["agreement"] <= 1
    assert json.loads(meta[INFO_KEY])["classes"] == ["blue", "green", "red"]
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in model.graph.initializer)  # int8 weights
    stored = {}
    for t in model.graph.initializer:
        stored[t.data_type] = stored.get(t.data_type, 0) + len(t.raw_data)
    assert stored[onnx.TensorProto.INT8] > 10 * stored.get(onnx.TensorProto.FLOAT, 0)  # weights int8, not float
    assert fp32.is_file()
    out = tmp_path / "int8.csv"
    assert main(["predict", "--model", str(int8), str(run / "data" / "test"), "--out", str(out), "--workers", "0"]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 18
    for row in rows:
        assert sum(float(row[f"p_{c}"]) for c in ("blue", "green", "red")) == pytest.approx(1.0, abs=1e-4)


def test_int8_needs_the_runs_validation_images(tmp_path, capsys):
    from galaxytune.inference.saved import ModelInfo, save_model
    from galaxytune.models.backbone import create_classifier

    net = create_classifier("resnet18", 3, weights="none").eval()
    save_model(net, ModelInfo("resnet18", ["a", "b", "c"], 32, 1.0, [0.5] * 3, [0.5] * 3), tmp_path / "models")
    assert main(["export", "--model", str(tmp_path), "--int8"]) == 2
    assert "splits.csv" in capsys.readouterr().err and not list((tmp_path / "models").glob("*.onnx"))
