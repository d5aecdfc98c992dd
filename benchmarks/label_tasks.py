"""Benchmark: the label tasks of real galaxy sets, each through the full default recipe.

Tasks (each needs its data argument; those without one are skipped):

- ``gz2-rules``: GZ2 5 classes from the vote fractions by the rules of ``configs/gz2_rules.yaml``;
- ``gz2-bar``: the GZ2 bar question (``configs/gz2_bar.yaml``), threshold tuned by the decision stage;
- ``gz2-soft``: GZ2 t01 (smooth / features / star) trained on the vote fractions themselves
  (``configs/gz2_soft.yaml``), scored as classes and by vote-fraction RMSE;
- ``first``: FIRST radio galaxies, 4 classes, greyscale (``configs/first_cpu.yaml``).

    python benchmarks/label_tasks.py --out runs/label_tasks \
        --gz2 ../shared/data/gz2_sdss_dr16_cutouts/labels.csv --first ../shared/data/first_radio_galaxies \
        --weights ../shared/weights/mobilenetv1_100.tf_quant_in1k.safetensors

Writes OUT/<task>/ (run folders; finished ones are skipped on a rerun) and prints each stage
table. Test figures are reported only: nothing here is chosen on them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import galaxytune
from galaxytune.config import load_config
from galaxytune.run_folder import RunFolder

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# task -> (data argument, config file)
TASKS = {
    "gz2-rules": ("gz2", "gz2_rules.yaml"),
    "gz2-bar": ("gz2", "gz2_bar.yaml"),
    "gz2-soft": ("gz2", "gz2_soft.yaml"),
    "first": ("first", "first_cpu.yaml"),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--gz2", help="gz2_sdss_dr16_cutouts/labels.csv (a GZ2 vote table)")
    p.add_argument("--first", help="first_radio_galaxies folder (train/, valid/)")
    p.add_argument("--weights", required=True, help="mobilenetv1_100 safetensors (TF-ported: pad_type same)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def run_task(args, task: str) -> Path | None:
    source, config = TASKS[task]
    data = getattr(args, source)
    if not data:
        return None
    folder = Path(args.out) / task
    if RunFolder(folder).stages.is_file():
        return folder
    cfg = load_config(CONFIGS / config, [
        f"model.weights={args.weights}", "model.kwargs={pad_type: same}", f"data.image_size={args.image_size}",
        "data.num_workers=0", f"finetune.epochs={args.epochs}", f"finetune.patience={args.epochs}",
        "finetune.warmup_epochs=0.5", f"trainer.seed={args.seed}", "trainer.progress=false",
    ], flags={"data": {"path": data}})
    print(f"--- {task}", flush=True)
    galaxytune.train(cfg, folder, overwrite=True)
    return folder


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    for task in args.tasks:
        folder = run_task(args, task)
        if folder is None:
            print(f"--- {task}: skipped (no --{TASKS[task][0]})")
            continue
        run = RunFolder(folder)
        stages = json.loads(run.stages.read_text())
        print(f"\n### {task}\n\n{run.stage_table_md.read_text()}")
        print("stages: " + "; ".join(f"{s['stage']} {s['seconds']:.0f} s" for s in stages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
