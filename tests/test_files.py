"""Checkpoints and outputs are written atomically: a crash never leaves a half-written file."""

import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from galaxytune.files import atomic_path, write_json
from galaxytune.training.fit import AtomicCheckpointIO


def test_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"version": 2, "trunc')
            raise RuntimeError("disk full")
    assert target.read_text().strip().endswith("}") and '"version": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_checkpoint_io_replaces_the_checkpoint_whole(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "best.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))

    def killed_mid_write(self, checkpoint, to, storage_options=None):
        with open(to, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise OSError("killed mid-write")

    # Whatever path the underlying writer is given gets a truncated file, then it dies.
    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", killed_mid_write)
    with pytest.raises(OSError):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]
