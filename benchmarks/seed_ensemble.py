"""Benchmark: an ensemble of runs that differ only in their seed, against each run alone.

Averaging the class probabilities of N models trained with different seeds is the classic way
to buy accuracy with compute: N times the training time. This scores it from run folders that
already exist (each run's ``stage_outputs.npz``), so it costs no training: every run alone,
every pair, and all runs together, on the runs' shared val and test splits. Each run enters with
its logits before the decision rule: the TTA stage's where the run kept TTA, else the finetune
stage's (a decision rule tuned for one model is not one for the mean).

    python benchmarks/seed_ensemble.py runs/lev/first/mnv2/seed0 runs/lev/first/mnv2/seed1 \
        runs/lev/first/mnv2/seed2

Prints one Markdown row per ensemble size: val and test accuracy, balanced accuracy and
macro-F1, mean ± std over the ensembles of that size.
"""

from __future__ import annotations

import argparse
import itertools
import statistics

import numpy as np
from scipy.special import softmax

from galaxytune.evaluation.metrics import METRICS, score
from galaxytune.run_folder import SPLITS, RunFolder


def probabilities(folder: RunFolder) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The run's targets and its class probabilities before the decision rule, per split."""
    targets, _, logits = folder.read_stage_outputs()
    stage = "tta" if "tta" in logits else "finetune"
    return targets, {split: softmax(logits[stage][split], axis=1) for split in SPLITS}


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders of the same preset and data, seeds differing")
    args = p.parse_args(argv)
    runs = [probabilities(RunFolder(path)) for path in args.runs]
    targets = runs[0][0]
    for other, _ in runs[1:]:
        if any(not np.array_equal(other[s], targets[s]) for s in SPLITS):
            raise SystemExit("The runs do not share their val and test splits: ensemble runs of one data split.")
    columns = [f"{split} {metric}" for split in SPLITS for metric in METRICS]
    print("| models | " + " | ".join(columns) + " | ensembles |")
    print("|---" * (len(columns) + 2) + "|")
    for size in range(1, len(runs) + 1):
        groups = list(itertools.combinations(range(len(runs)), size))
        cells = []
        for split in SPLITS:
            predicted = [sum(runs[i][1][split] for i in group).argmax(1) for group in groups]
            cells += [spread([score(targets[split], y, metric) for y in predicted]) for metric in METRICS]
        print(f"| {size} | " + " | ".join(cells) + f" | {len(groups)} |")


if __name__ == "__main__":
    main()
