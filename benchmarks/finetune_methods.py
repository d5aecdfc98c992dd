"""Benchmark: the finetune methods (and the BatchNorm policy) on real galaxy sets, 3 seeds each.

For every dataset, seed and method the whole recipe runs through the Python API in its own
process (so that peak memory is that run's own): transfer -> finetune with the method ->
decision rule. The finetune guard is off, so the finetune row is the method's own model; the
script records whether the guard would have kept the transfer weights. The split is fixed
(``data.split_seed=0``); the seed changes initialisation, shuffling, augmentation and dropout.

    python benchmarks/finetune_methods.py --out runs/methods \
        --gz2 ../shared/data/gz2_sdss_dr16_cutouts/labels.csv --gz1 ../shared/data/gz1_sdss_smallGZ1 \
        --weights ../shared/weights/mobilenetv1_100.tf_quant_in1k.safetensors

Finished runs are skipped when the command is repeated, so an interrupted benchmark resumes.
Writes OUT/<dataset>/<method>/seed<k>/ (run folder + result.json), OUT/summary.json and prints
a Markdown table per dataset. The validation columns are what a choice between methods may
use; the test columns are reported only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# name -> config overrides; 'head' is stage 1 alone.
METHODS = {
    "head": ["finetune.enabled=false"],
    "bias-norm": ["finetune.method=bias-norm"],
    "lora": ["finetune.method=lora"],
    "top-blocks": ["finetune.method=top-blocks"],
    "top-blocks, BN train": ["finetune.method=top-blocks", "finetune.batchnorm=train"],
    "full": ["finetune.method=full"],
}
DEFAULT = "full"  # galaxytune's default finetune.method, chosen on this benchmark's validation columns
DATASETS = {
    "gz2": lambda path: [f"data.path={path}", "data.label_column=derived_class"],
    "gz1": lambda path: [f"data.path={path}"],
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--gz2", help="gz2_sdss_dr16_cutouts/labels.csv")
    p.add_argument("--gz1", help="gz1_sdss_smallGZ1 folder")
    p.add_argument("--weights", required=True, help="mobilenetv1_100 safetensors (TF-ported: pad_type same)")
    p.add_argument("--model", default="mobilenetv1_100")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--one", nargs=3, metavar=("DATASET", "METHOD", "SEED"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def overrides(args, dataset: str, method: str, seed: int) -> list[str]:
    return [
        *DATASETS[dataset](getattr(args, dataset)), *METHODS[method],
        f"model.name={args.model}", f"model.weights={args.weights}", "model.kwargs={pad_type: same}",
        f"data.image_size={args.image_size}", "data.num_workers=0", "data.split_seed=0",
        f"finetune.epochs={args.epochs}", f"finetune.patience={args.epochs}", "finetune.warmup_epochs=0.5",
        "finetune.guard=false", f"trainer.seed={seed}", "trainer.progress=false",
    ]


def run_dir(args, dataset: str, method: str, seed: int) -> Path:
    return Path(args.out) / dataset / method.replace(", ", "_").replace(" ", "_") / f"seed{seed}"


def run_one(args, dataset: str, method: str, seed: int) -> None:
    """One recipe run in this process; writes result.json next to the run folder's files."""
    import torch

    import galaxytune
    from galaxytune.config import load_config

    torch.set_num_threads(args.threads)
    folder = run_dir(args, dataset, method, seed)
    cfg = load_config(overrides=overrides(args, dataset, method, seed))
    start = time.perf_counter()
    result = galaxytune.train(cfg, folder, overwrite=True)
    rows = {r["stage"]: r for r in result.table}
    stages = {s.name: s.summary() for s in result.stages}
    own = "finetune" if "finetune" in rows else "transfer"
    out = {
        "dataset": dataset, "method": method, "seed": seed, "wall_seconds": time.perf_counter() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "model_stage": {k: rows[own][k] for k in rows[own] if k.startswith(("val_", "test_"))},
        "decision_stage": {k: rows["decision"][k] for k in rows["decision"] if k.startswith(("val_", "test_"))},
        "stages": stages, "n_train": len(result.data.sets["train"]), "n_test": len(result.data.sets["test"]),
        "load_average": os.getloadavg(),
    }
    (folder / "result.json").write_text(json.dumps(out, indent=1))


def mean_std(values: list[float], digits: int = 3, sign: str = "") -> str:
    """Mean ± sample standard deviation (``sign='+'`` shows the sign of gains)."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:{sign}.{digits}f}"
    return f"{np.mean(values):{sign}.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def summarise(results: list[dict]) -> str:
    lines = []
    for dataset in DATASETS:
        mine = [r for r in results if r["dataset"] == dataset]
        if not mine:
            continue
        r0 = mine[0]
        lines += [
            f"\n### {dataset} (train {r0['n_train']:,}, test {r0['n_test']:,})\n",
            "| method | trainable params | adapter | s / epoch (median) | peak RSS | val acc | val macro-F1 | test acc "
            "| test macro-F1 | + decision: test acc | + decision: test macro-F1 | beat transfer on val | seeds |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for method in METHODS:
            runs = [r for r in mine if r["method"] == method]
            if not runs:
                continue
            ft = [r["stages"].get("finetune") for r in runs]
            per_epoch = [f["seconds_per_epoch"] for f in ft if f]
            adapter = ft[0]["adapter_bytes"] if ft[0] else None
            trainable = ft[0]["trainable_params"] if ft[0] else runs[0]["stages"]["transfer"]["trainable_params"]
            beat = [f["beat_incoming"] for f in ft if f]
            lines.append("| " + " | ".join([
                method, f"{trainable:,}", f"{adapter / 1e6:.2f} MB" if adapter else "-",
                f"{np.median(per_epoch):.0f}" if per_epoch else "-",
                f"{max(r['peak_rss_mb'] for r in runs):,.0f} MB",
                mean_std([r["model_stage"]["val_accuracy"] for r in runs]),
                mean_std([r["model_stage"]["val_macro_f1"] for r in runs]),
                mean_std([r["model_stage"]["test_accuracy"] for r in runs]),
                mean_std([r["model_stage"]["test_macro_f1"] for r in runs]),
                mean_std([r["decision_stage"]["test_accuracy"] for r in runs]),
                mean_std([r["decision_stage"]["test_macro_f1"] for r in runs]),
                f"{sum(beat)} of {len(beat)}" if beat else "-", str(len(runs)),
            ]) + " |")
        lines += default_recipe(mine)
    return "\n".join(lines)


def default_recipe(runs: list[dict]) -> list[str]:
    """The recipe per seed with its guard on (method ``DEFAULT``): what the guard would have kept
    is that method's run where its finetune beat the transfer stage on validation, else the
    head-only run of the same seed (same transfer stage; decision rule fitted on its logits)."""
    by = {(r["method"], r["seed"]): r for r in runs}
    seeds = sorted(seed for method, seed in by if method == DEFAULT and ("head", seed) in by)
    if not seeds:
        return []
    kept = []
    for seed in seeds:
        tuned = by[(DEFAULT, seed)]
        kept.append(tuned if tuned["stages"]["finetune"]["beat_incoming"] else by[("head", seed)])
    lines = [f"\nRecipe with method {DEFAULT} and the guard on, seeds {', '.join(map(str, seeds))}: finetune "
             f"kept in {sum(r['method'] == DEFAULT for r in kept)} of {len(kept)}."]
    for stage in ("model_stage", "decision_stage"):
        name = "before the decision rule" if stage == "model_stage" else "after the decision rule"
        lines.append(f"- {name}: " + ", ".join(
            f"test {m} {mean_std([r[stage][f'test_{m}'] for r in kept])}"
            for m in ("accuracy", "balanced_accuracy", "macro_f1")))
    gains = {m: [r["decision_stage"][f"test_{m}"] - r["model_stage"][f"test_{m}"] for r in kept]
             for m in ("accuracy", "balanced_accuracy", "macro_f1")}
    lines.append("- decision rule's test gain: " + ", ".join(f"{m} {mean_std(v, sign='+')}" for m, v in gains.items()))
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        dataset, method, seed = args.one
        run_one(args, dataset, method, int(seed))
        return 0
    datasets = [d for d in DATASETS if getattr(args, d)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    results = []
    for seed in args.seeds:
        for dataset in datasets:
            for method in args.methods:
                done = run_dir(args, dataset, method, seed) / "result.json"
                if not done.is_file():
                    print(f"--- {dataset} / {method} / seed {seed}", flush=True)
                    argv_one = [sys.executable, __file__, *sys.argv[1:], "--one", dataset, method, str(seed)]
                    subprocess.run(argv_one, env=env, check=True)
                results.append(json.loads(done.read_text()))
                summary = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
                           "image_size": args.image_size, "epochs": args.epochs, "runs": results}
                Path(args.out, "summary.json").write_text(json.dumps(summary, indent=1))
    print(summarise(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
