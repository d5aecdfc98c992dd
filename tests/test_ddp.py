"""Multi-process training through Lightning's DDP: two CPU processes talking over gloo."""

import csv
import os
import subprocess
import sys

from conftest import FAST, write_folder


def _steps_per_epoch(run, stage):
    rows = [r for r in csv.DictReader(open(run / "logs" / stage / "metrics.csv")) if r.get("train_loss")]
    return int(rows[0]["step"]) + 1


def test_two_process_ddp_run_on_cpu(tmp_path, weights_file):
    data = tmp_path / "data"
    for split, n, seed in (("train", 16, 0), ("val", 6, 1), ("test", 6, 2)):
        write_folder(data / split, {"red": n, "green": n, "blue": n}, seed)
    common = ["--data", str(data), "--weights", str(weights_file), *FAST, "transfer.batch_size=8"]
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "galaxytune.cli", "train"]
    single = subprocess.run(cmd + ["--out", str(tmp_path / "one"), *common, "trainer.accelerator=cpu",
                                   "trainer.devices=1"], env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    both = subprocess.run(cmd + ["--out", str(tmp_path / "ddp"), *common, *ddp],
                          env=env, capture_output=True, text=True, timeout=300)
    assert both.returncode == 0, both.stderr[-2000:]
    run = tmp_path / "ddp"
    assert (run / "models" / "model.safetensors").is_file() and (run / "report.html").is_file()
    assert [r["stage"] for r in csv.DictReader(open(run / "stage_table.csv"))] == ["transfer", "finetune", "decision"]
    # Each of the two processes sees half of the 48 training images per epoch: half the steps.
    assert _steps_per_epoch(tmp_path / "one", "transfer") == 6
    assert _steps_per_epoch(run, "transfer") == 3
    assert _steps_per_epoch(tmp_path / "one", "finetune") == 3
    assert _steps_per_epoch(run, "finetune") == 1
