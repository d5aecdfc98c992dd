"""Benchmark: galaxytune's default recipe against a naive full finetune, on the same split.

1. The default recipe (transfer -> top-blocks finetune -> decision rule) through the Python
   API, with only the settings these data and weights need (CSV path, label column, weights
   file, ``pad_type='same'``) and the progress bar off.
2. A naive full finetune written as a user would: plain PyTorch, every layer trainable,
   ``model.train()`` (BatchNorm in train mode), AdamW, cosine schedule, random flips,
   cross-entropy, batch 64, ``--epochs`` epochs, the epoch with the best validation
   accuracy kept. It uses exactly the recipe run's train/val/test split (its splits.csv)
   and the same 128 px uint8 images.

Both are scored with ``galaxytune.evaluation.metrics.classification_metrics`` on val and
test. The test split is only reported: nothing here is chosen on it.

    python benchmarks/gz2_recipe_vs_naive.py --data PATH/labels.csv \
        --weights PATH/mobilenetv1_100.tf_quant_in1k.safetensors --out runs/bench_gz2

Writes ``OUT/recipe/`` (the galaxytune run folder), ``OUT/naive/`` (per-epoch log, logits),
``OUT/summary.json``, and prints a Markdown section.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from scipy.special import softmax
from scipy.stats import binomtest
from torch import nn

import galaxytune
from galaxytune.data.samples import SPLITS
from galaxytune.decision import DecisionRule
from galaxytune.evaluation.bootstrap import paired_bootstrap
from galaxytune.evaluation.metrics import METRIC_NAMES as METRICS
from galaxytune.evaluation.metrics import classification_metrics
from galaxytune.evaluation.stage_table import format_table
from galaxytune.files import write_dict_csv
from galaxytune.report.summary import read_csv
from galaxytune.run_folder import RunFolder


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="labels.csv (filename column relative to its folder)")
    p.add_argument("--weights", help="mobilenetv1_100 safetensors file (TF-ported, mean=std=0.5)")
    p.add_argument("--out", help="run folder root: OUT/recipe, OUT/naive, OUT/summary.json")
    p.add_argument("--epochs", type=int, default=15,
                   help="naive finetune epochs (default 15 = the recipe's max finetune epochs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the naive run and trainer.seed of the recipe")
    p.add_argument("--label-column", default="derived_class")
    p.add_argument("--reuse-naive", metavar="SUMMARY_JSON",
                   help="take the naive run from an earlier summary.json instead of training it again; "
                        "its recipe's splits.csv must equal this run's")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra galaxytune override for the recipe (for smoke tests only; none in the benchmark)")
    p.add_argument("--paired", metavar="OUT",
                   help="train nothing: paired test-split comparison (McNemar, bootstrap) of an earlier run OUT")
    args = p.parse_args(argv)
    if not args.paired and not (args.data and args.weights and args.out):
        p.error("--data, --weights and --out are required (unless --paired OUT)")
    return args


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "galaxytune": galaxytune.__version__,
    }


class LoadSampler:
    """Samples the 1-minute load average every few seconds: other work on the machine
    (which would slow either run) shows up in the summary."""

    def __init__(self, every: float = 5.0):
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        s = np.asarray(self.samples or [float("nan")])
        return {"mean": float(s.mean()), "max": float(s.max()), "samples": len(self.samples)}


# --------------------------------------------------------------------------- recipe


def run_recipe(args: argparse.Namespace, run_dir: Path) -> dict:
    overrides = [
        f"data.path={Path(args.data).resolve()}",
        f"data.label_column={args.label_column}",
        f"model.weights={Path(args.weights).resolve()}",
        "model.kwargs={pad_type: same}",
        "trainer.progress=false",
        f"trainer.seed={args.seed}",
        *args.override,
    ]
    cfg = galaxytune.load_config(overrides=overrides)
    with LoadSampler() as load:
        cpu_start, start = time.process_time(), time.perf_counter()
        result = galaxytune.train(cfg, run_dir)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu_start

    # Images that went through finetune training steps: epochs run x full batches x batch size
    # (the recipe's train loader drops the last partial batch).
    n_train = len(result.data.sets["train"])
    epochs = _epochs_run(RunFolder(run_dir))
    steps_per_epoch = max(1, n_train // cfg.finetune.batch_size)
    ft_images = epochs.get("finetune", 0) * steps_per_epoch * cfg.finetune.batch_size
    seconds = {s.name: s.seconds for s in result.stages}
    ft_seconds = seconds.get("finetune", 0.0)
    final = result.table[-1]
    return {
        "overrides": overrides,
        "config": cfg.to_dict(),
        "wall_seconds": wall,
        "process_cpu_seconds": cpu,
        "loadavg_1min": load.summary(),
        "stage_seconds": seconds,
        "setup_seconds": wall - sum(seconds.values()),
        "epochs_run": epochs,
        "finetune_images": ft_images,
        "finetune_images_per_s": ft_images / ft_seconds if ft_seconds else None,
        "table": result.table,
        "table_markdown": format_table(result.table),
        "final_stage": final["stage"],
        "val": {m: final[f"val_{m}"] for m in (*METRICS, "n")},
        "test": {m: final[f"test_{m}"] for m in (*METRICS, "n")},
        "decision_rule": result.rule.to_dict(),
        "classes": result.classes,
        "_result": result,
    }


def _epochs_run(folder: RunFolder) -> dict[str, int]:
    """Epochs that trained, per stage, from the run folder's merged metrics.csv."""
    return dict(Counter(row["stage"] for row in read_csv(folder.epoch_metrics) if row.get("train_loss")))


# --------------------------------------------------------------------------- naive


def load_pixels(paths: list[Path], size: int) -> torch.Tensor:
    """What a user writes: PIL -> RGB -> (resize if needed) -> uint8 CHW."""
    arrays = []
    for path in paths:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            arrays.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays))


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - 0.5) / 0.5


def random_flips(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    h = torch.rand(x.shape[0], generator=gen) < 0.5
    v = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(h.view(-1, 1, 1, 1), x.flip(-1), x)
    return torch.where(v.view(-1, 1, 1, 1), x.flip(-2), x)


@torch.no_grad()
def predict_logits(model: nn.Module, pixels: torch.Tensor, batch: int = 256) -> np.ndarray:
    model.eval()
    return torch.cat([model(normalise(pixels[i:i + batch])) for i in range(0, len(pixels), batch)]).numpy()


def run_naive(args: argparse.Namespace, recipe_dir: Path, recipe_data, classes: list[str], run_dir: Path) -> dict:
    with LoadSampler() as load:
        out = _run_naive(args, recipe_dir, recipe_data, classes, run_dir)
    out["loadavg_1min"] = load.summary()
    return out


def _run_naive(args: argparse.Namespace, recipe_dir: Path, recipe_data, classes: list[str], run_dir: Path) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    cpu_start, total_start = time.process_time(), time.perf_counter()

    # The same split, read back from the recipe's run folder; images decoded here with PIL.
    split, index = RunFolder(recipe_dir).read_splits(), {c: i for i, c in enumerate(classes)}
    paths = {s: [x.path for x in split.get(s, [])] for s in SPLITS}
    targets = {s: torch.tensor([index[x.label] for x in split.get(s, [])], dtype=torch.int64) for s in SPLITS}
    t0 = time.perf_counter()
    pixels = {s: load_pixels(paths[s], 128) for s in SPLITS}
    decode_seconds = time.perf_counter() - t0
    same_input = {}
    for s in SPLITS:
        ref = recipe_data.sets[s]
        same_paths = [str(p) for p in ref.paths] == [str(p) for p in paths[s]]
        same_y = torch.equal(ref.targets, targets[s])
        diff = None
        if ref.pixels is not None and ref.pixels.shape == pixels[s].shape:
            diff = int((ref.pixels.int() - pixels[s].int()).abs().max())
        same_input[s] = {"paths": same_paths, "targets": same_y, "max_abs_pixel_diff": diff}
        if not (same_paths and same_y):
            raise SystemExit(f"naive {s} split differs from the recipe's: {same_input[s]}")
    print(f"naive: decoded {sum(len(p) for p in pixels.values())} images in {decode_seconds:.1f}s; "
          f"same split and labels as the recipe; max |pixel diff| vs the recipe's cache: "
          f"{ {s: v['max_abs_pixel_diff'] for s, v in same_input.items()} }", flush=True)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = timm.create_model(
        "mobilenetv1_100", pretrained=True, num_classes=len(classes), pad_type="same",
        pretrained_cfg_overlay=dict(file=str(Path(args.weights).resolve()), mean=(0.5,) * 3, std=(0.5,) * 3),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    n_train, batch = len(targets["train"]), 64
    drop_last = n_train % batch == 1  # a batch of one cannot go through train-mode BatchNorm
    steps_per_epoch = n_train // batch if drop_last else math.ceil(n_train / batch)
    total_steps = steps_per_epoch * args.epochs
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    loss_fn = nn.CrossEntropyLoss()

    log, best = [], {"val_accuracy": -1.0}
    train_seconds = val_seconds = 0.0
    images_seen = 0
    y_val = targets["val"].numpy()
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n_train, generator=gen)
        losses = []
        for step in range(steps_per_epoch):
            idx = order[step * batch:(step + 1) * batch]
            x = random_flips(normalise(pixels["train"][idx]), gen)
            loss = loss_fn(model(x), targets["train"][idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            images_seen += len(idx)
        epoch_train = time.perf_counter() - t0
        train_seconds += epoch_train

        t0 = time.perf_counter()
        val_logits = predict_logits(model, pixels["val"])
        val = classification_metrics(y_val, softmax(val_logits, axis=1))
        epoch_val = time.perf_counter() - t0
        val_seconds += epoch_val
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "first_step_loss": losses[0],
               "lr_end": scheduler.get_last_lr()[0], "train_seconds": epoch_train, "val_seconds": epoch_val,
               **{f"val_{k}": v for k, v in val.items()}}
        log.append(row)
        print(f"naive epoch {epoch + 1}/{args.epochs}: loss {row['train_loss']:.4f} "
              f"val acc {val['accuracy']:.4f} macro-F1 {val['macro_f1']:.4f} "
              f"({epoch_train:.0f}s train, {epoch_val:.0f}s val)", flush=True)
        if val["accuracy"] > best["val_accuracy"]:
            best = {"val_accuracy": val["accuracy"], "epoch": epoch, "state": copy.deepcopy(model.state_dict()),
                    "val_logits": val_logits}

    model.load_state_dict(best["state"])
    t0 = time.perf_counter()
    test_logits = predict_logits(model, pixels["test"])
    test_seconds = time.perf_counter() - t0
    total = time.perf_counter() - total_start
    cpu = time.process_time() - cpu_start
    y_test = targets["test"].numpy()
    val_metrics = classification_metrics(y_val, softmax(best["val_logits"], axis=1))
    test_metrics = classification_metrics(y_test, softmax(test_logits, axis=1))

    write_dict_csv(run_dir / "epochs.csv", log)
    np.savez_compressed(run_dir / "outputs.npz", y_val=y_val, y_test=y_test,
                        val_logits=best["val_logits"], test_logits=test_logits)
    return {
        "settings": {"model": "mobilenetv1_100", "pad_type": "same", "trainable": "all", "batchnorm": "train mode",
                     "optimizer": "AdamW", "lr": 3e-4, "weight_decay": 0.05, "schedule": "cosine over all steps",
                     "augment": "random horizontal + vertical flips", "loss": "cross-entropy", "batch_size": batch,
                     "epochs": args.epochs, "selection": "best val accuracy", "seed": args.seed},
        "same_input_as_recipe": same_input,
        "wall_seconds": total,
        "process_cpu_seconds": cpu,
        "decode_seconds": decode_seconds,
        "train_seconds": train_seconds,
        "val_seconds": val_seconds,
        "test_seconds": test_seconds,
        "train_images": images_seen,
        "train_images_per_s": images_seen / train_seconds,
        "train_images_per_s_incl_val": images_seen / (train_seconds + val_seconds),
        "first_step_loss": log[0]["first_step_loss"],
        "best_epoch": best["epoch"] + 1,
        "epochs": log,
        "val": val_metrics,
        "test": test_metrics,
    }


# --------------------------------------------------------------------------- report


def naive_row(naive: dict) -> dict:
    return {"stage": f"naive full finetune (epoch {naive['best_epoch']}/{naive['settings']['epochs']})",
            **{f"{split}_{key}": value for split in ("val", "test") for key, value in naive[split].items()},
            "seconds": naive["wall_seconds"]}


def paired_test(recipe_dir: Path, naive_dir: Path, rule: dict, stage: str, resamples: int = 2000) -> dict:
    """Recipe vs naive on the same test images: exact McNemar test on which images each gets
    right, and paired bootstrap intervals (resampling test images) of the accuracy and macro-F1 gaps."""
    targets, _, logits = RunFolder(recipe_dir).read_stage_outputs()
    n = np.load(naive_dir / "outputs.npz")
    y = targets["test"]
    if not np.array_equal(y, n["y_test"]):
        raise SystemExit(f"{recipe_dir} and {naive_dir} do not share a test split.")
    probs_r = DecisionRule(**rule).probabilities(logits[stage]["test"])
    probs_n = softmax(n["test_logits"], axis=1)
    right_r, right_n = probs_r.argmax(1) == y, probs_n.argmax(1) == y
    only_r, only_n = int((right_r & ~right_n).sum()), int((~right_r & right_n).sum())
    out = {"n": int(len(y)), "only_recipe_right": only_r, "only_naive_right": only_n,
           "mcnemar_p": float(binomtest(only_r, only_r + only_n).pvalue) if only_r + only_n else 1.0}
    # Recipe minus naive, both scored on each resample of the test images.
    gaps = {m: paired_bootstrap(y, probs_n, probs_r, m, n_boot=resamples, seed=0) for m in ("accuracy", "macro_f1")}
    out |= {f"{m}_gap": g["delta"] for m, g in gaps.items()}
    return out | {f"{m}_gap_95": [g["ci_low"], g["ci_high"]] for m, g in gaps.items()}


def paired_text(p: dict) -> str:
    return (f"Paired on the same {p['n']} test images: accuracy gap {p['accuracy_gap']:+.4f} "
            f"[{p['accuracy_gap_95'][0]:+.3f}, {p['accuracy_gap_95'][1]:+.3f}], exact McNemar p = {p['mcnemar_p']:.3f} "
            f"({p['only_recipe_right']} images only the recipe gets right, "
            f"{p['only_naive_right']} only the naive run); "
            f"macro-F1 gap {p['macro_f1_gap']:+.4f} [{p['macro_f1_gap_95'][0]:+.3f}, {p['macro_f1_gap_95'][1]:+.3f}] "
            "(95% bootstrap intervals over test images).")


def naive_dir_of(out: Path, naive: dict) -> Path:
    return Path(naive["reused_from"]).parent / "naive" if "reused_from" in naive else out / "naive"


def verdict(recipe: dict, naive: dict) -> dict:
    return {
        "test_accuracy": recipe["test"]["accuracy"] > naive["test"]["accuracy"],
        "test_macro_f1": recipe["test"]["macro_f1"] > naive["test"]["macro_f1"],
        "wall_time": recipe["wall_seconds"] <= naive["wall_seconds"],
    }


def markdown(summary: dict) -> str:
    m, r, n, v = summary["machine"], summary["recipe"], summary["naive"], summary["verdict"]
    both = [dict(r["table"][-1], stage=f"recipe ({r['final_stage']})", seconds=r["wall_seconds"]), naive_row(n)]
    yes = {True: "yes", False: "NO"}
    lines = [
        "## gz2 5-class: default recipe vs naive full finetune",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} CPUs, torch threads {m['torch_num_threads']}, "
        f"CUDA {m['cuda_available']}; torch {m['torch']}, timm {m['timm']}, galaxytune {m['galaxytune']}.",
        "",
        "```",
        summary["command"],
        "```",
        "",
        "### Default recipe: stage table",
        "",
        r["table_markdown"],
        "",
        "### Side by side (recipe = its last stage; seconds = total wall time of each run)",
        "",
        format_table(both),
        "",
        "### Time",
        "",
        "| | recipe | naive |",
        "|---|---|---|",
        f"| wall time, total (s) | {r['wall_seconds']:.1f} | {n['wall_seconds']:.1f} |",
        f"| process CPU time, total (s) | {r['process_cpu_seconds']:.1f} | {n['process_cpu_seconds']:.1f} |",
        f"| CPU share of the machine (CPU s / (wall s x {m['cpu_count']})) | "
        f"{r['process_cpu_seconds'] / (r['wall_seconds'] * m['cpu_count']):.2f} | "
        f"{n['process_cpu_seconds'] / (n['wall_seconds'] * m['cpu_count']):.2f} |",
        "| 1-min load average during the run, mean / max | "
        f"{r['loadavg_1min']['mean']:.2f} / {r['loadavg_1min']['max']:.2f} | "
        f"{n['loadavg_1min']['mean']:.2f} / {n['loadavg_1min']['max']:.2f} |",
        f"| of which data decoding / setup (s) | {r['setup_seconds']:.1f} (decode, model, saving) | "
        f"{n['decode_seconds']:.1f} (decode) |",
        "| of which training (s) | "
        + ", ".join(f"{k} {s:.1f}" for k, s in r["stage_seconds"].items())
        + f" | train steps {n['train_seconds']:.1f}, per-epoch val {n['val_seconds']:.1f} |",
        f"| epochs run | {', '.join(f'{k} {e}' for k, e in r['epochs_run'].items())} | {n['settings']['epochs']} |",
        f"| training images/s | {r['finetune_images_per_s'] or 0:.1f} (finetune stage, incl. its val + predict) | "
        f"{n['train_images_per_s']:.1f} (train steps only); {n['train_images_per_s_incl_val']:.1f} incl. val |",
        "",
        f"Naive first-step training loss: {n['first_step_loss']:.2f}.",
        "",
        "### Criteria (recipe vs naive)",
        "",
        f"- higher test accuracy: {yes[v['test_accuracy']]} "
        f"({r['test']['accuracy']:.4f} vs {n['test']['accuracy']:.4f})",
        f"- higher test macro-F1: {yes[v['test_macro_f1']]} "
        f"({r['test']['macro_f1']:.4f} vs {n['test']['macro_f1']:.4f})",
        f"- no more wall time: {yes[v['wall_time']]} ({r['wall_seconds']:.1f}s vs {n['wall_seconds']:.1f}s)",
    ]
    if "paired" in summary:
        lines += ["", paired_text(summary["paired"])]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.paired:
        out = Path(args.paired)
        earlier = json.loads((out / "summary.json").read_text())
        r = earlier["recipe"]
        print(paired_text(paired_test(out / "recipe", naive_dir_of(out, earlier["naive"]),
                                      r["decision_rule"], r["final_stage"])))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"machine: {info}", flush=True)
    command = shlex.join(["python", *sys.argv])

    recipe = run_recipe(args, out / "recipe")
    result = recipe.pop("_result")
    print(f"recipe: {recipe['wall_seconds']:.1f}s wall", flush=True)
    if args.reuse_naive:
        earlier = Path(args.reuse_naive)
        if RunFolder(earlier.parent / "recipe").splits.read_text() != RunFolder(out / "recipe").splits.read_text():
            raise SystemExit(f"{earlier}: its split differs from this run's; the naive run cannot be reused.")
        naive = json.loads(earlier.read_text())["naive"]
        naive["reused_from"] = str(earlier)
    else:
        naive = run_naive(args, out / "recipe", result.data, result.classes, out / "naive")
    print(f"naive: {naive['wall_seconds']:.1f}s wall", flush=True)

    summary = {"command": command, "machine": info, "recipe": recipe, "naive": naive,
               "verdict": verdict(recipe, naive)}
    summary["paired"] = paired_test(out / "recipe", naive_dir_of(out, naive), recipe["decision_rule"],
                                    recipe["final_stage"])
    text = markdown(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    (out / "summary.md").write_text(text + "\n")
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
