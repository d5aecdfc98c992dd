"""Encoders from the Hugging Face Hub (Zoobot's galaxy-pretrained ones among them) or a local
copy of their repo, and weights that do not fit the architecture named.

The Hub is a real HTTP server on 127.0.0.1 that answers as the Hub does, serving a repo the test
makes: a ``test_convnext`` encoder (timm's tiny ConvNeXt) saved headless, as Zoobot saves its
encoders (``num_classes=0``), with timm's ``config.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from conftest import FAST, LocalHTTPServer, QuietHandler, write_folder
from safetensors.torch import load_file, save_file

from galaxytune.cli import main
from galaxytune.errors import ModelError
from galaxytune.models.backbone import create_classifier

ARCH = "test_convnext"
MEAN, STD = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]  # not timm's default for the architecture: must come from config.json
MODEL_ARGS = {"dims": [16, 24, 32, 40]}  # not the architecture's default widths: the saved model must keep them


def write_encoder_repo(folder: Path, weights_name: str = "pytorch_model.bin",
                       model_args: dict | None = None) -> dict[str, torch.Tensor]:
    """A headless encoder's repo folder (config.json and weights); returns its tensors."""
    folder.mkdir(parents=True)
    torch.manual_seed(7)
    encoder = timm.create_model(ARCH, pretrained=False, num_classes=0, **(model_args or {}))
    tensors = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    if weights_name.endswith(".safetensors"):
        save_file(tensors, str(folder / weights_name))
    else:
        torch.save(tensors, folder / weights_name)
    config = {"architecture": ARCH, "num_classes": 0, "num_features": encoder.num_features,
              "pretrained_cfg": {"input_size": [3, 224, 224], "mean": MEAN, "std": STD, "classifier": "head.fc"}}
    if model_args:
        config["model_args"] = model_args
    (folder / "config.json").write_text(json.dumps(config))
    return tensors


def assert_backbone_is(net, tensors: dict[str, torch.Tensor]) -> None:
    state = net.backbone.state_dict()
    for key, value in tensors.items():
        assert torch.equal(state[key], value), key
    assert net.mean.flatten().tolist() == pytest.approx(MEAN) and net.std.flatten().tolist() == pytest.approx(STD)


def test_a_local_copy_of_a_hub_encoder_trains_and_its_model_predicts_without_it(tmp_path):
    repo = tmp_path / "zoobot-encoder-test"
    tensors = write_encoder_repo(repo, model_args=MODEL_ARGS)
    assert_backbone_is(create_classifier(f"local-dir:{repo}", 3), tensors)

    data = tmp_path / "data"
    for split, n, seed in (("train", 16, 0), ("val", 6, 1), ("test", 6, 2)):
        write_folder(data / split, {"red": n, "green": n, "blue": n}, seed)
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--model", f"local-dir:{repo}", *FAST]) == 0
    meta = json.loads((run / "models" / "model.json").read_text())
    assert meta["architecture"] == ARCH and meta["mean"] == pytest.approx(MEAN)
    assert meta["create_kwargs"] == MODEL_ARGS
    # The saved model is rebuilt from the registry name and the repo's model_args: the encoder's
    # folder is no longer needed.
    shutil.rmtree(repo)
    out = tmp_path / "predictions.csv"
    assert main(["predict", "--model", str(run), str(data / "test"), "--out", str(out)]) == 0
    assert len(out.read_text().strip().splitlines()) == 1 + 18


def test_weights_of_another_architecture_are_refused_not_loaded_silently(tmp_path, weights_file):
    file = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model(ARCH, num_classes=0).state_dict().items()}, str(file))
    with pytest.raises(ModelError, match=rf"weights from {file} do not fit timm model mobilenetv1_100: 100%"):
        create_classifier("mobilenetv1_100", 3, weights=str(file))
    with pytest.raises(ModelError, match="config.json does not exist"):
        create_classifier(f"local-dir:{tmp_path / 'nowhere'}", 3)
    with pytest.raises(ModelError, match="hf-hub:mwalmsley/zoobot"):  # a repo id without its prefix
        create_classifier("mwalmsley/zoobot-encoder-convnext_nano", 3)
    # Weights that fit load as before, and the random state a seeded run goes on with is the
    # one a plain build leaves (the check replays the initialisation without consuming it).
    torch.manual_seed(3)
    create_classifier("mobilenetv1_100", 3, weights=str(weights_file))
    after_check = torch.rand(3)
    torch.manual_seed(3)
    timm.create_model("mobilenetv1_100", pretrained=False, num_classes=3)
    assert torch.equal(after_check, torch.rand(3))


class FakeHub(LocalHTTPServer):
    """Answers ``/<owner>/<repo>/resolve/<revision>/<file>`` as the Hub does (HEAD for the
    metadata, then GET), for the repos under ``root``."""

    def __init__(self, root: Path):
        self.root, self.requests = root, []
        super().__init__(self._handler())

    def _handler(self):
        hub = self

        class Handler(QuietHandler):
            def _answer(self, body: bool):
                owner, repo, _, _, *name = self.path.lstrip("/").split("/")
                hub.requests.append((self.command, self.path))
                folder, file = hub.root / owner / repo, hub.root / owner / repo / "/".join(name)
                if not file.is_file():
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound" if folder.is_dir() else "RepoNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", "0" * 40)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

        return Handler


LOAD = """
import json, sys
from safetensors.torch import load_file
from galaxytune.errors import ModelError
from galaxytune.models.backbone import create_classifier
for name in sys.argv[2:]:
    try:
        net = create_classifier(name, 3)
    except ModelError as exc:
        print(json.dumps({"error": str(exc)}))
    else:
        state = net.backbone.state_dict()
        same = all(state[k].equal(v) for k, v in load_file(sys.argv[1]).items())
        print(json.dumps({"same": same, "mean": net.mean.flatten().tolist()}))
"""


def test_a_hub_encoder_is_downloaded_by_name(tmp_path):
    hub = FakeHub(tmp_path / "hub")
    tensors = write_encoder_repo(tmp_path / "hub" / "galaxies" / "encoder", "model.safetensors")
    expected = tmp_path / "hub" / "galaxies" / "encoder" / "model.safetensors"

    def load(*names: str, offline: bool = False) -> list[dict]:
        # Its own process: the Hub client reads its endpoint and offline switch when imported.
        env = dict(os.environ, HF_ENDPOINT=hub.address, HF_HOME=str(tmp_path / "hf"),
                   HF_HUB_OFFLINE="1" if offline else "0", HF_HUB_DISABLE_TELEMETRY="1")
        done = subprocess.run([sys.executable, "-c", LOAD, str(expected), *names], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.strip().splitlines()[-len(names):]]

    loaded, missing = load("hf-hub:galaxies/encoder", "hf-hub:galaxies/no-such-encoder")
    assert loaded == {"same": True, "mean": pytest.approx(MEAN)}
    assert ("GET", "/galaxies/encoder/resolve/main/model.safetensors") in hub.requests
    assert len(tensors) == len(load_file(str(expected)))
    missing = missing["error"]
    assert "Could not fetch hf-hub:galaxies/no-such-encoder from the Hub repo galaxies/no-such-encoder" in missing
    assert "local-dir:FOLDER" in missing
    # Offline, a repo already fetched loads from the Hub client's cache; another one says what to do.
    cached, other = load("hf-hub:galaxies/encoder", "hf-hub:galaxies/other", offline=True)
    assert cached["same"]
    assert "local-dir:FOLDER" in other["error"]
    hub.close()
