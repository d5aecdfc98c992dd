"""The run folder: one run at a time (lock), a state that says where a run is, and runs that can
be stopped (SIGTERM, kill -9) and resumed to the result an uninterrupted run gives."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import FAST

from galaxytune.cli import main
from galaxytune.run_folder import RunFolder

# Long enough to be caught mid-finetune; data tiny enough that each epoch takes a fraction of a second.
SLOW_FINETUNE = [*FAST, "finetune.epochs=12", "finetune.patience=12", "decision.tta=false"]


def _train_args(data, out, weights_file, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--weights", str(weights_file), *SLOW_FINETUNE, *extra]


def _start(args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "galaxytune.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def _wait_for_epoch(folder: RunFolder, process: subprocess.Popen, stage: str, epoch: int) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended before {stage} epoch {epoch}: {process.communicate()}"
        try:
            state = json.loads(folder.state_file.read_text())
        except (FileNotFoundError, ValueError):
            state = {}
        if state.get("stage") == stage and (state.get("epoch") or 0) >= epoch:
            return
        time.sleep(0.02)
    raise AssertionError(f"{stage} epoch {epoch} not reached in time")


def _rows(out):
    with open(RunFolder(out).stage_table, newline="") as handle:
        return {r["stage"]: r for r in csv.DictReader(handle)}


def test_state_records_a_finished_run_and_drops_the_resume_files(tiny_split, tmp_path, weights_file):
    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_split), "--out", str(out), "--weights", str(weights_file), *FAST]) == 0
    folder = RunFolder(out)
    state = folder.read_state()
    assert state["status"] == "done" and state["pid"] == os.getpid()
    assert not list(folder.checkpoints.glob("*.done.*")) and not list(folder.checkpoints.glob("*-last.ckpt"))
    assert folder.best_checkpoint("finetune").is_file() and folder.stage_outputs.is_file()
    _, _, logits = folder.read_stage_outputs()
    assert {"transfer", "finetune", "decision"} <= set(logits) <= {"transfer", "finetune", "tta", "decision"}


def test_a_second_run_into_a_locked_folder_is_refused(tiny_split, tmp_path, weights_file, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
         "lock.acquire(); print('held', flush=True); time.sleep(60)", str(RunFolder(out).lock_file)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--data", str(tiny_split), "--out", str(out), "--weights", str(weights_file),
                     *FAST]) == 2
        assert "is in use by another galaxytune run" in capsys.readouterr().err
        assert not RunFolder(out).config.exists()  # nothing of the refused run was written
    finally:
        holder.kill()
        holder.wait()


def test_sigterm_ends_with_a_non_zero_status_and_says_how_to_resume(tiny_split, tmp_path, weights_file):
    out = tmp_path / "run"
    folder = RunFolder(out)
    run = _start(_train_args(tiny_split, out, weights_file))
    _wait_for_epoch(folder, run, "finetune", 2)
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("galaxytune: interrupted by SIGTERM during finetune (epoch ")
    assert f"galaxytune train --resume --out {out}" in last
    assert folder.read_state()["status"] == "interrupted"
    assert not folder.models.exists()  # no model passes for a finished one

    # A new run into the folder is refused with the way on; --resume finishes it.
    assert main(_train_args(tiny_split, out, weights_file)) == 2
    assert main(["train", "--resume", "--out", str(out)]) == 0
    assert folder.read_state()["status"] == "done" and (folder.models / "model.json").is_file()
    assert main(["train", "--resume", "--out", str(out)]) == 2  # nothing left to resume


def test_a_run_killed_mid_finetune_resumes_to_the_uninterrupted_result(tiny_split, tmp_path, weights_file):
    reference = tmp_path / "reference"
    assert main(_train_args(tiny_split, reference, weights_file)) == 0

    out = tmp_path / "killed"
    folder = RunFolder(out)
    run = _start(_train_args(tiny_split, out, weights_file))
    _wait_for_epoch(folder, run, "finetune", 3)
    run.kill()  # SIGKILL: no handler runs, the state still says "running"
    run.communicate()
    assert folder.read_state()["status"] == "running" and folder.last_checkpoint("finetune").is_file()
    assert main(["train", "--resume", "--out", str(out)]) == 0

    # Stated tolerance: the resumed run restores the optimizer, schedule, early stopping and the
    # random stream, so it reproduces the uninterrupted run's metrics to 1e-6.
    want, got = _rows(reference), _rows(out)
    assert list(got) == list(want)
    for stage in want:
        for key in ("val_accuracy", "val_macro_f1", "test_accuracy", "test_macro_f1", "val_ece"):
            assert float(got[stage][key]) == pytest.approx(float(want[stage][key]), abs=1e-6), (stage, key)
    epochs = [r for r in csv.DictReader(open(folder.epoch_metrics)) if r["stage"] == "finetune"]
    assert [int(r["epoch"]) for r in epochs] == list(range(12))  # every epoch logged once


def test_resume_takes_only_the_run_folder(tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(tmp_path / "run"), "--data", "x"]) == 2
    assert "--resume continues a run with its own config" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "run")]) == 2
    assert "holds no run to resume" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    assert "train needs --data" in capsys.readouterr().err
