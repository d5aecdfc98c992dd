"""A full disk or a folder one may not write: one line naming the path, never a traceback.

Disk-full and permission errors are made with monkeypatch (tests may run as root, where
chmod does not stop a write).
"""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import pytest
from conftest import write_folder

from galaxytune import files
from galaxytune.cli import main, os_error_line
from galaxytune.files import atomic_path, write_json

FULL = os.strerror(errno.ENOSPC)


def test_a_full_disk_mid_write_names_the_file_asked_for(tmp_path):
    target = tmp_path / "model.json"
    write_json(target, {"version": 1})
    with pytest.raises(OSError) as caught:
        with atomic_path(target) as tmp:
            tmp.write_text("half a")
            raise OSError(errno.ENOSPC, FULL)  # what write() gives: no file name
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert '"version": 1' in target.read_text() and [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_an_error_about_the_temporary_file_names_the_destination(tmp_path, monkeypatch):
    def refused(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(src), str(dst))

    monkeypatch.setattr(files.os, "replace", refused)
    with pytest.raises(PermissionError) as caught:
        write_json(tmp_path / "a.json", {})
    assert caught.value.filename == str(tmp_path / "a.json") and ".partial" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_an_error_about_another_file_is_left_as_it_is(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        with atomic_path(tmp_path / "out.csv"):
            open(tmp_path / "input.csv")
    assert caught.value.filename == str(tmp_path / "input.csv")


@pytest.mark.parametrize("code, filename, line", [
    (errno.ENOSPC, "/r/p.csv", f"error: cannot write /r/p.csv: {FULL} (free space or choose another --out)"),
    (errno.EACCES, "/r", "error: cannot access /r: permission denied (check the permissions or choose another --out)"),
    (errno.EPERM, "/r", "error: cannot access /r: permission denied: Operation not permitted (check the permissions "
                        "or choose another --out)"),
    (errno.EROFS, "/r/p.csv", "error: cannot write /r/p.csv: Read-only file system (choose another --out)"),
    (errno.ENOENT, "/m.onnx", "error: cannot access /m.onnx: No such file or directory"),
    (errno.ENOSPC, None, f"error: {FULL} (free space or choose another --out)"),
])
def test_os_error_line(code, filename, line):
    assert os_error_line(OSError(code, os.strerror(code), filename)) == line


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    """A saved (untrained) model and three images to predict."""
    from galaxytune.inference.saved import ModelInfo, save_model
    from galaxytune.models.backbone import create_classifier

    root = tmp_path_factory.mktemp("predict")
    net = create_classifier("mobilenetv1_100", 3, "none")
    save_model(net, ModelInfo("mobilenetv1_100", ["blue", "green", "red"], 32, 1.0, [0.5] * 3, [0.5] * 3),
               root / "run" / "models")
    write_folder(root / "images", {"red": 3})
    return root / "run", root / "images"


class _FullDisk(io.StringIO):
    def write(self, text):
        raise OSError(errno.ENOSPC, FULL)


def _predict(model, images, out, capsys):
    capsys.readouterr()
    code = main(["predict", "--model", str(model), str(images), "--out", str(out)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.replace("\r", "\n").splitlines()
    return code, [line for line in lines if line.strip() and "%|" not in line]  # without the progress bar


def test_predict_on_a_full_disk_is_one_line_naming_the_csv(model_and_images, tmp_path, monkeypatch, capsys):
    model, images = model_and_images
    out = tmp_path / "out" / "predictions.csv"
    out.parent.mkdir()
    out.write_text("earlier predictions\n")

    def full_open(path, mode="r", *args, **kwargs):
        Path(path).write_text("path,predicted_class\nhalf a ro")  # what a disk that fills up mid-file leaves
        return _FullDisk()

    monkeypatch.setattr("galaxytune.inference.predict.open", full_open, raising=False)
    code, err = _predict(model, images, out, capsys)
    assert code != 0
    assert err == [f"error: cannot write {out}: {FULL} (free space or choose another --out)"]
    assert out.read_text() == "earlier predictions\n" and [p.name for p in out.parent.iterdir()] == [out.name]


def test_predict_without_write_permission_says_so(model_and_images, tmp_path, monkeypatch, capsys):
    model, images = model_and_images
    out = tmp_path / "predictions.csv"

    def refused(path, mode="r", *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr("galaxytune.inference.predict.open", refused, raising=False)
    code, err = _predict(model, images, out, capsys)
    assert code != 0
    assert err == [f"error: cannot access {out}: permission denied (check the permissions or choose "
                                "another --out)"]
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_created_is_named(model_and_images, tmp_path, monkeypatch, capsys):
    model, images = model_and_images
    out = tmp_path / "locked" / "predictions.csv"

    def refused(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "mkdir", refused)
    code, err = _predict(model, images, out, capsys)
    assert code != 0
    assert err == [f"error: cannot access {out.parent}: permission denied (check the permissions or "
                                "choose another --out)"]


def test_saved_weights_on_a_full_disk_are_an_os_error_naming_the_file(tmp_path, monkeypatch):
    """safetensors' own writer reports a full disk as a SafetensorError; the weights go through
    Python's file writes instead, which raise OSError."""
    from galaxytune.inference.saved import WEIGHTS, ModelInfo, save_model
    from galaxytune.models.backbone import create_classifier

    def full(self, data):
        raise OSError(errno.ENOSPC, FULL)

    monkeypatch.setattr(Path, "write_bytes", full)
    net = create_classifier("mobilenetv1_100", 2, "none")
    with pytest.raises(OSError) as caught:
        save_model(net, ModelInfo("mobilenetv1_100", ["a", "b"], 32, 1.0, [0.5] * 3, [0.5] * 3), tmp_path)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / WEIGHTS)
    assert list(tmp_path.iterdir()) == []
