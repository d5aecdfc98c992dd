"""Prediction at survey scale: streamed batch by batch, resumable, split into shards."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys

import pytest
from conftest import write_folder

from galaxytune.cli import main
from galaxytune.errors import ConfigError
from galaxytune.inference.predict import Predictor, parse_shard, shard
from galaxytune.training.interrupt import RunInterrupted

FAST = ["--workers", "0", "--batch-size", "4"]


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    """A saved (untrained) model and 15 images: 4 batches of 4, the last one short."""
    from galaxytune.inference.saved import ModelInfo, save_model
    from galaxytune.models.backbone import create_classifier

    root = tmp_path_factory.mktemp("stream")
    net = create_classifier("mobilenetv1_100", 3, "none")
    save_model(net, ModelInfo("mobilenetv1_100", ["blue", "green", "red"], 32, 1.0, [0.5] * 3, [0.5] * 3,
                              decision={"temperature": 2.0, "offsets": [0.1, 0.0, -0.1]}), root / "run" / "models")
    write_folder(root / "images", {"red": 5, "green": 5, "blue": 5})
    return root / "run", root / "images"


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def one_run(model_and_images, tmp_path_factory):
    """The rows of a single, uninterrupted run: what shards and resumed runs must reproduce."""
    model, images = model_and_images
    out = tmp_path_factory.mktemp("one") / "all.csv"
    assert main(["predict", "--model", str(model), str(images), "--out", str(out), *FAST]) == 0
    rows = _rows(out)
    assert len(rows) == 16 and rows[0][:2] == ["path", "predicted_class"]
    return rows


def test_the_stream_holds_one_batch_at_a_time(model_and_images, monkeypatch):
    import galaxytune.data.images as images_module

    model, images = model_and_images
    decoded = []
    real = images_module.read_image
    monkeypatch.setattr(images_module, "read_image", lambda path, *a, **k: decoded.append(path) or real(path, *a, **k))
    predictor = Predictor.load(model)
    paths = predictor.image_paths(images)
    consumed = 0
    for batch in predictor.stream(paths, batch_size=4, workers=0):
        # Nothing is decoded beyond the batch just handed over, and nothing kept before it.
        assert len(decoded) - consumed == len(batch.paths) <= 4
        assert batch.probabilities.shape == (len(batch.paths), 3)
        consumed += len(batch.paths)
    assert consumed == len(decoded) == 15


def test_rows_reach_the_csv_batch_by_batch_and_a_cut_off_run_resumes(model_and_images, one_run, tmp_path,
                                                                     monkeypatch, capsys):
    model, images = model_and_images
    out = tmp_path / "pred.csv"
    real, calls = Predictor.logits, []

    def stopped_in_batch_3(self, pixels, tta=None):
        calls.append(len(pixels))
        if len(calls) == 3:
            raise RunInterrupted(signal.SIGTERM)  # as SLURM's time limit would
        return real(self, pixels, tta)

    monkeypatch.setattr(Predictor, "logits", stopped_in_batch_3)
    assert main(["predict", "--model", str(model), str(images), "--out", str(out), *FAST]) == 128 + signal.SIGTERM
    assert "--resume" in capsys.readouterr().err
    partial = tmp_path / "pred.csv.partial"
    assert not out.exists() and _rows(partial) == one_run[:9]  # the header and two whole batches
    with open(partial, "a") as handle:
        handle.write(one_run[9][0] + ",re")  # a row that a kill cut off mid-write
    monkeypatch.setattr(Predictor, "logits", real)
    capsys.readouterr()
    assert main(["predict", "--model", str(model), str(images), "--out", str(out), "--resume", *FAST]) == 0
    assert "8 image(s) already predicted, 7 to go" in capsys.readouterr().out
    assert _rows(out) == one_run and not partial.exists()
    # Resuming a finished run predicts nothing and leaves the file as it was.
    before = out.read_bytes()
    assert main(["predict", "--model", str(model), str(images), "--out", str(out), "--resume", *FAST]) == 0
    assert out.read_bytes() == before


def test_shards_concatenated_are_one_run(model_and_images, one_run, tmp_path):
    model, images = model_and_images
    parts = []
    for i in range(3):
        out = tmp_path / f"part{i}.csv"
        assert main(["predict", "--model", str(model), str(images), "--out", str(out), "--shard", f"{i}/3",
                     *FAST]) == 0
        parts.append(_rows(out))
    assert all(p[0] == one_run[0] for p in parts) and all(len(p) > 1 for p in parts)
    assert [one_run[0]] + [row for p in parts for row in p[1:]] == one_run


def test_shard_arithmetic():
    items = list(range(10))
    for n in (1, 3, 7, 10, 13):
        blocks = [shard(items, i, n) for i in range(n)]
        assert sum(blocks, []) == items and max(map(len, blocks)) - min(map(len, blocks)) <= 1
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "-1/4", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)


def test_resume_refuses_the_csv_of_another_model(model_and_images, tmp_path, capsys):
    model, images = model_and_images
    out = tmp_path / "pred.csv"
    out.write_text("path,predicted_class,p_spiral,p_elliptical\nx.png,spiral,0.9,0.1\n")
    assert main(["predict", "--model", str(model), str(images), "--out", str(out), "--resume", *FAST]) == 2
    assert "another model" in capsys.readouterr().err
    assert out.read_text().startswith("path,predicted_class,p_spiral")


def test_the_command_line_starts_without_torch():
    """``galaxytune --help`` must not pay for importing torch or Lightning."""
    code = ("import sys, galaxytune.cli; "
            "print(sorted(m for m in ('torch', 'lightning', 'pytorch_lightning', 'timm', 'onnxruntime') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_decoding_workers_on_the_cpu_take_only_the_cores_the_network_leaves_free(model_and_images, monkeypatch):
    import os

    import torch

    predictor = Predictor.load(model_and_images[0])
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert predictor.decoding_workers() == 0  # both cores run the network: decode in turn with it
    assert predictor.decoding_workers(3) == 3  # asked for: given
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert predictor.decoding_workers() == 8
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert predictor.decoding_workers() == 8  # at most 8, as everywhere
    predictor.device = torch.device("cuda")  # the network on a GPU: decoding has the CPUs
    assert predictor.decoding_workers() == 8


def test_inference_runs_channels_last_and_hands_the_network_back_as_it_came(model_and_images):
    """Prediction takes the faster channels-last layout (Predictor keeps it; run_batches hands the
    network back in the default layout and its train/eval mode, as a fit expects) and predicts
    what the plain network predicts."""
    import torch
    from torch.utils.data import TensorDataset

    from galaxytune.inference.predict import run_batches

    predictor = Predictor.load(model_and_images[0])
    convs = [p for p in predictor.net.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)

    net = predictor.net.to(memory_format=torch.contiguous_format).train()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        expected = net.eval()(images)
    net.train()
    got = run_batches(net, TensorDataset(images, torch.zeros(6)), "test", batch_size=4)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert net.training and all(p.is_contiguous() for p in net.parameters())
