"""Multi-process training through Lightning's DDP: CPU processes talking over gloo."""

import csv
import json
import os
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import FAST, write_folder
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from galaxytune.training.module import ClassifierModule
from galaxytune.training.sharding import Shard, sharded

# -- the samplers and the gathering, in two processes without Lightning ---------------------------


def _in_group(rank: int, init_file: str, out: str, job) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        result = job()
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)


def _two_processes(tmp_path, job) -> list:
    """``job()`` in two gloo processes: what each returned."""
    mp.spawn(_in_group, args=(str(tmp_path / "init"), str(tmp_path), job), nprocs=2, join=True)
    return [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]


def _validation_scores() -> dict:
    """ClassifierModule's validation metrics on 7 items dealt by :class:`Shard` in batches of 2."""
    torch.manual_seed(0)
    head = nn.Linear(5, 3)
    x, y = torch.randn(7, 5), torch.tensor([0, 1, 2, 0, 1, 2, 1])
    module = ClassifierModule(head, 3, [{"params": list(head.parameters()), "lr": 0.1}])
    seen = []
    for i, batch in enumerate(DataLoader(TensorDataset(x, y, torch.arange(7)), batch_size=2,
                                         sampler=Shard(7, shuffle=False))):
        seen += batch[2].tolist()
        module.validation_step(batch[:2], i)
    scores = {k: float(v) for k, v in module.val_metrics.compute().items()}
    return scores | {"val_loss": float(module.val_mean_loss.compute()), "seen": seen}


def _epoch_shares() -> dict:
    # 9 items, batches of 2 per process: each process takes 4 (one item of the epoch left out).
    # The processes' random streams differ: the shared order must come from process 0's.
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    torch.manual_seed(3 + rank)
    sampler = Shard(9, shuffle=True)
    return {epoch: [batch.tolist() for batch in DataLoader(range(9), batch_size=2, sampler=sampler, drop_last=True)]
            for epoch in (0, 1)}


def _gathered() -> dict:
    computed = []

    def compute(part):
        rows = [part[i][0] for i in range(len(part))]
        computed.extend(int(r[0]) for r in rows)
        return torch.stack(rows) * 2.0

    data = TensorDataset(torch.arange(7.0).repeat(3, 1).T, torch.zeros(7))
    return {"out": sharded(compute, data).tolist(), "computed": computed}


def test_unpadded_validation_metrics_equal_one_process(tmp_path):
    """7 validation items across 2 processes: each item scored once, and the synced metrics are a
    single process's exactly (the mean loss up to float rounding of the sums, 1e-6)."""
    ranks = _two_processes(tmp_path, _validation_scores)
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == list(range(7))
    single = _validation_scores()
    for rank in ranks:
        for key in ("val_accuracy", "val_balanced_accuracy", "val_macro_f1"):
            assert rank[key] == single[key]
        assert rank["val_loss"] == pytest.approx(single["val_loss"], abs=1e-6)


def test_training_shares_are_a_big_batch_dealt_in_turn(tmp_path):
    """The k-th batches of B of the two processes together are the k-th batch of 2B of one process."""
    ranks = _two_processes(tmp_path, _epoch_shares)
    single = _epoch_shares()  # one process, process 0's random stream: a plain shuffling DataLoader's batches
    torch.manual_seed(3)
    assert single[0] == [b.tolist() for b in DataLoader(range(9), batch_size=2, shuffle=True, drop_last=True)]
    for epoch in ("0", "1"):
        order = [i for batch in single[int(epoch)] for i in batch]
        assert len(ranks[0][epoch]) == len(ranks[1][epoch]) == 2
        for k in range(2):
            assert sorted(ranks[0][epoch][k] + ranks[1][epoch][k]) == sorted(order[4 * k:4 * k + 4])
    assert ranks[0]["0"] != ranks[0]["1"]  # a new order each epoch


def test_predictions_are_computed_once_and_gathered(tmp_path):
    ranks = _two_processes(tmp_path, _gathered)
    expected = (torch.arange(7.0).repeat(3, 1).T * 2).tolist()
    assert ranks[0]["out"] == ranks[1]["out"] == expected
    assert sorted(ranks[0]["computed"] + ranks[1]["computed"]) == list(range(7))


# -- a whole run -------------------------------------------------------------------------------------


def _steps_per_epoch(run, stage):
    rows = [r for r in csv.DictReader(open(run / "logs" / stage / "metrics.csv")) if r.get("train_loss")]
    return int(rows[0]["step"]) + 1


def _val_epochs(run, stage):
    return [r for r in csv.DictReader(open(run / "logs" / stage / "metrics.csv")) if r.get("val_loss")]


LOGIT_TOLERANCE = 1e-3
"""Logits, validation losses and calibration errors (ECE): seen up to 2e-6 (logits), 1.2e-5 (ECE)."""
COUNT_TOLERANCE = 1e-9
"""Metrics that count images (accuracy, balanced accuracy, macro-F1 and their intervals): equal."""


def test_two_process_ddp_run_equals_one_process(tmp_path, weights_file):
    """A 2-process gloo DDP run with batches of B per process gives the stage table of one process
    with batches of 2B: every stage's val and test metrics that count images (accuracy, balanced
    accuracy, macro-F1, their bootstrap intervals; every epoch's validation macro-F1) equal; its
    logits, calibration errors and every epoch's validation loss within 1e-3 absolute (seen: logits
    up to 2e-6, ECE up to 1.2e-5, validation loss up to 3e-6).

    Equal by construction: the processes' k-th batches together are the single process's k-th batch
    (galaxytune.training.sharding), DDP averages the processes' mean-loss gradients (= the big
    batch's mean gradient), validation and predictions count every image once. What is left is
    float rounding: batches of B vs 2B through the network, the gradient all-reduce's sum, summed
    metric states. To hold, the run must be free of per-process randomness and batch statistics:
    no dropout (model.drop_rate=0), no augmentation (finetune.augment=false), frozen BatchNorm (the
    default), no class-weighted loss (finetune.class_weights=none, the default: a weighted mean per process
    is not the big batch's), and a training set that the global batch divides (48 = 3 x 16).
    The validation set has an odd size (7), split 4 + 3 between the processes.
    """
    data = tmp_path / "data"
    for split, counts, seed in (("train", (16, 16, 16), 0), ("val", (3, 2, 2), 1), ("test", (2, 2, 2), 2)):
        write_folder(data / split, dict(zip(("red", "green", "blue"), counts)), seed)
    common = ["--data", str(data), "--weights", str(weights_file), *FAST, "model.drop_rate=0",
              "finetune.augment=false", "finetune.batchnorm=frozen", "finetune.guard=false",
              "trainer.accelerator=cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "galaxytune.cli", "train"]
    runs = {
        "one": ["transfer.batch_size=16", "finetune.batch_size=16", "trainer.devices=1"],
        "ddp": ["transfer.batch_size=8", "finetune.batch_size=8", "trainer.devices=2", "trainer.strategy=ddp"],
    }
    for name, args in runs.items():
        done = subprocess.run(cmd + ["--out", str(tmp_path / name), *common, *args],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    one, ddp = tmp_path / "one", tmp_path / "ddp"
    assert (ddp / "models" / "model.safetensors").is_file() and (ddp / "report.html").is_file()
    # Each process takes half of the 48 training images in batches of 8: the steps of one process's 16.
    assert _steps_per_epoch(one, "transfer") == _steps_per_epoch(ddp, "transfer") == 3
    assert _steps_per_epoch(one, "finetune") == _steps_per_epoch(ddp, "finetune") == 3

    table = {name: list(csv.DictReader(open(tmp_path / name / "stage_table.csv"))) for name in runs}
    assert [r["stage"] for r in table["ddp"]] == [r["stage"] for r in table["one"]]
    assert not any(s["kept_incoming"] for s in json.load(open(ddp / "stages.json")))  # finetune's own logits
    worst = {"count": 0.0, "ece": 0.0, "logit": 0.0, "val_loss": 0.0}
    for a, b in zip(table["one"], table["ddp"]):
        for key in a:
            if key.startswith(("val", "test")) and a[key] not in ("", None):
                kind = "ece" if "_ece" in key else "count"
                worst[kind] = max(worst[kind], abs(float(a[key]) - float(b[key])))
    outputs = {name: np.load(tmp_path / name / "stage_outputs.npz") for name in runs}
    for key in outputs["one"].files:
        if not key.endswith("_paths") and not key.startswith("y_"):
            diff = float(np.abs(outputs["one"][key] - outputs["ddp"][key]).max())
            print(f"{key}: largest logit difference {diff:.3g}")
            worst["logit"] = max(worst["logit"], diff)
    for stage in ("transfer", "finetune"):
        for a, b in zip(_val_epochs(one, stage), _val_epochs(ddp, stage), strict=True):
            worst["val_loss"] = max(worst["val_loss"], abs(float(a["val_loss"]) - float(b["val_loss"])))
            assert a["val_macro_f1"] == b["val_macro_f1"]
    print(f"largest differences, DDP vs one process: {worst}")
    assert worst["count"] <= COUNT_TOLERANCE
    assert max(worst["ece"], worst["logit"]) <= LOGIT_TOLERANCE
    assert worst["val_loss"] <= LOGIT_TOLERANCE


def _features_once(rank0_cached: bool) -> dict:
    """Stage-1 features of 7 images: which images this process computed. ``rank0_cached``: only
    process 0 finds them in the disk cache (as where another node's disk lacks them); else the
    disk cache is off."""
    from types import SimpleNamespace

    from galaxytune.config import load_config
    from galaxytune.training import features

    computed = []

    def backbone_pass(module, part, desc, workers, batch_size=None):
        rows = torch.stack([part[i][0] for i in range(len(part))])
        computed.extend(int(r[0]) for r in rows)
        return rows * 2.0

    # This process's own module: the test spawns its processes.
    features.run_batches = backbone_pass
    dataset = TensorDataset(torch.arange(7.0).repeat(3, 1).T)
    dataset.paths = [f"{i}.png" for i in range(7)]
    if rank0_cached:
        rank = torch.distributed.get_rank()
        features.load_arrays = lambda *args: {"features": np.full((7, 3), -1.0)} if rank == 0 else None
        features.save_arrays = lambda *args: None
    cache = "/nonexistent/cache" if rank0_cached else "off"
    cfg = load_config(overrides=[f"data.disk_cache={cache}", "model.weights=hub"])
    data = SimpleNamespace(sets={"train": dataset}, cache_key="key" if rank0_cached else None)
    net = SimpleNamespace(mean=torch.zeros(3), std=torch.ones(3), stretch="none", softening=0.1)  # for the key
    out = features.split_features(cfg, net, data, "train", workers=0)
    return {"out": out.tolist(), "computed": computed}


@pytest.mark.parametrize("rank0_cached", [False, True], ids=["cache off", "only process 0 cached"])
def test_stage1_features_are_computed_once_and_gathered(tmp_path, rank0_cached):
    ranks = _two_processes(tmp_path, partial(_features_once, rank0_cached))
    assert ranks[0]["out"] == ranks[1]["out"] == (torch.arange(7.0).repeat(3, 1).T * 2).tolist()
    assert sorted(ranks[0]["computed"] + ranks[1]["computed"]) == list(range(7))


def _ordered(marker: str) -> dict:
    import time

    from galaxytune.training.processes import main_process_first

    with main_process_first():
        found = os.path.exists(marker)
        if torch.distributed.get_rank() == 0:
            time.sleep(0.5)  # a process that did not wait would look before this file exists
            open(marker, "w").close()
    return {"found": found}


def test_main_process_prepares_first(tmp_path):
    ranks = _two_processes(tmp_path, partial(_ordered, str(tmp_path / "prepared")))
    assert [r["found"] for r in ranks] == [False, True]
