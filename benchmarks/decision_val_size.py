"""Does the decision rule's gain survive a smaller validation set?

From a run's saved logits (``stage_outputs.npz``), fits the decision rule again on random
stratified subsets of the validation split (100%, 30%, 10%), and scores each rule on the full
test split, against the stage before the rule. Nothing is trained; it takes seconds.

    python benchmarks/decision_val_size.py --run runs/bench_gz2_v2/recipe
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.special import softmax
from sklearn.model_selection import train_test_split

from galaxytune.config import load_config
from galaxytune.decision import fit_decision_rule
from galaxytune.evaluation.metrics import classification_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    run = Path(args.run)
    dc = load_config(run / "config.yaml").decision
    out = np.load(run / "stage_outputs.npz")
    stage = next(s for s in ("finetune", "transfer") if f"{s}_val" in out)
    val, test, y_val, y_test = out[f"{stage}_val"], out[f"{stage}_test"], out["y_val"], out["y_test"]
    before = classification_metrics(y_test, softmax(test, axis=1))
    print(f"run: {run}; rule tuned for {dc.metric}; test n={len(y_test)}; before the rule: "
          f"accuracy {before['accuracy']:.4f}, macro-F1 {before['macro_f1']:.4f}")
    print("| val used | val n | test accuracy gain | test macro-F1 gain | test bal. acc. gain "
          "| rules that lower macro-F1 |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for fraction in (1.0, 0.3, 0.1):
        gains = []
        for seed in range(args.repeats if fraction < 1 else 1):
            idx = np.arange(len(y_val))
            if fraction < 1:
                idx, _ = train_test_split(idx, train_size=fraction, stratify=y_val, random_state=seed)
            rule = fit_decision_rule(val[idx], y_val[idx], dc.metric, dc.temperature, dc.offsets, dc.offset_range)
            after = classification_metrics(y_test, rule.probabilities(test))
            gains.append([after[m] - before[m] for m in ("accuracy", "macro_f1", "balanced_accuracy")])
        g = np.array(gains)
        cells = [f"{g[:, i].mean():+.4f} ± {g[:, i].std():.4f}" for i in range(3)]
        worse = f"{(g[:, 1] < 0).mean():.0%}"
        print(f"| {fraction:.0%} | {len(idx)} | {' | '.join(cells)} | {worse} |")
        summary[fraction] = g.tolist()
    (run / "decision_val_size.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
