"""Benchmark: a preset over several seeds, and one ablation per lever, each a full ``galaxytune
train`` run in its own process with its wall time.

    python benchmarks/cpu_presets.py --out runs/presets/gz2 --config configs/gz2_cpu.yaml \
        --data ../shared/data/gz2_sdss_dr16_cutouts/labels.csv \
        --weights ../shared/weights/mobilenetv1_100.tf_quant_in1k.safetensors \
        --ablation "no question head=finetune.question_weight=0" --seeds 0 1 2

Every variant runs with each seed on the same split (``data.split_seed`` of the preset); the
seed changes initialisation, shuffling, augmentation and dropout. Finished runs are skipped
when the command is repeated, so an interrupted benchmark resumes; runs go one at a time so
that wall times are not shared. Writes OUT/<variant>/seed<k>/ (the run folder and
result.json) and prints one Markdown row per variant: the final stage's validation and test
accuracy and macro-F1 (mean ± standard deviation over seeds) and the median wall time.
Validation columns are what a choice may use; test columns are reported only.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from galaxytune.run_folder import RunFolder

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--config", required=True, help="the preset")
    p.add_argument("--data", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ablation", action="append", default=[],
                   help="'name=key=value[,key=value...]': a variant of the preset (repeatable)")
    p.add_argument("--no-preset", action="store_true", help="run the ablations only")
    return p.parse_args(argv)


def variants(args: argparse.Namespace) -> dict[str, list[str]]:
    out = {} if args.no_preset else {"preset": []}
    for text in args.ablation:
        name, _, overrides = text.partition("=")
        # split only at a comma that starts the next key, so list values such as model.mean=[0.5,0.5,0.5] survive
        out[name] = [o for o in re.split(r",(?=[A-Za-z_][\w.]*=)", overrides) if o]
    return out


def run_one(args: argparse.Namespace, overrides: list[str], seed: int, folder: Path) -> dict:
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    command = [sys.executable, "-m", "galaxytune.cli", "train", "--config", args.config, "--data", args.data,
               "--weights", args.weights, "--out", str(folder), "--overwrite", f"trainer.seed={seed}",
               "trainer.progress=false", *overrides]
    start = time.perf_counter()
    with open(folder.with_suffix(".log"), "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    with open(RunFolder(folder).stage_table) as handle:
        rows = list(csv.DictReader(handle))
    final = rows[-1]
    result = {"seed": seed, "overrides": overrides, "wall_seconds": round(wall, 1), "final_stage": final["stage"],
              "stages": [r["stage"] for r in rows]}
    for split in ("val", "test"):
        for metric in METRICS:
            result[f"{split}_{metric}"] = float(final[f"{split}_{metric}"])
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


def mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    summary = {}
    for name, overrides in variants(args).items():
        results = []
        for seed in args.seeds:
            folder = out / name.replace(" ", "_") / f"seed{seed}"
            folder.parent.mkdir(parents=True, exist_ok=True)
            results.append(run_one(args, overrides, seed, folder))
        summary[name] = results
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    names = ("acc", "bal. acc", "macro-F1")
    header = ["variant", "overrides", *(f"{s} {n}" for s in ("val", "test") for n in names), "wall (median)"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, results in summary.items():
        cells = [mean_sd([r.get(f"{split}_{metric}", float("nan")) for r in results])
                 for split in ("val", "test") for metric in METRICS]
        wall = statistics.median(r["wall_seconds"] for r in results)
        overrides = " ".join(results[0]["overrides"]) or "(as shipped)"
        print(f"| {name} | `{overrides}` | " + " | ".join(cells) + f" | {wall / 60:.1f} min |")


if __name__ == "__main__":
    main()
