"""Does the decision rule's gain survive a smaller validation set?

From runs' saved logits (``stage_outputs.npz``), fits the decision rule again on random
stratified subsets of the validation split (100%, 30%, 10%), once per offset rule, and scores
each fitted rule on the full test split against the stage before the rule. Only validation
logits fit anything; test only scores. Nothing is trained; it takes a minute or two.

    python benchmarks/decision_val_size.py --run runs/bench_gz2_v2/recipe --rules greedy bagged
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.special import softmax
from sklearn.model_selection import train_test_split

from galaxytune.config import load_config
from galaxytune.decision import OFFSET_RULES, fit_decision_rule
from galaxytune.evaluation.metrics import classification_metrics
from galaxytune.run_folder import RunFolder

GAIN_METRICS = ("accuracy", "macro_f1", "balanced_accuracy")
FRACTIONS = (1.0, 0.3, 0.1)


def _gains(run: Path, rules: list[str], repeats: int) -> dict:
    """{(fraction, val n, rule): per subset, the test gains and whether the offsets stayed zero}."""
    folder = RunFolder(run)
    dc = load_config(folder.config).decision
    targets, _, logits = folder.read_stage_outputs()
    stage = next(s for s in ("finetune", "transfer") if s in logits)
    val, test, y_val, y_test = logits[stage]["val"], logits[stage]["test"], targets["val"], targets["test"]
    before = classification_metrics(y_test, softmax(test, axis=1))
    print(f"run {run}: rule tuned for {dc.metric}; val n={len(y_val)}, test n={len(y_test)}; before the rule: "
          f"test accuracy {before['accuracy']:.4f}, macro-F1 {before['macro_f1']:.4f}")
    results = {}
    for fraction in FRACTIONS:
        for seed in range(repeats if fraction < 1 else 1):
            idx = np.arange(len(y_val))
            if fraction < 1:
                idx, _ = train_test_split(idx, train_size=fraction, stratify=y_val, random_state=seed)
            for name in rules:
                rule = fit_decision_rule(val[idx], y_val[idx], dc.metric, dc.temperature, dc.offsets,
                                         dc.offset_range, rule=name, seed=seed)
                after = classification_metrics(y_test, rule.probabilities(test))
                row = [after[m] - before[m] for m in GAIN_METRICS] + [not np.any(rule.offsets)]
                results.setdefault((fraction, len(idx), name), []).append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs="+", required=True, help="run folders; their subsets are pooled")
    parser.add_argument("--rules", nargs="+", default=list(OFFSET_RULES), choices=OFFSET_RULES)
    parser.add_argument("--repeats", type=int, default=50, help="random validation subsets per size")
    args = parser.parse_args()
    pooled: dict = {}
    for run in map(Path, args.run):
        for key, rows in _gains(run, args.rules, args.repeats).items():
            pooled.setdefault(key, []).extend(rows)
    print("\n| val used | val n | offset rule | subsets | test accuracy gain | test macro-F1 gain "
          "| test bal. acc. gain | rules that lower macro-F1 | offsets left at zero |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (fraction, n, name), rows in pooled.items():
        g = np.array(rows, dtype=float)
        cells = [f"{g[:, i].mean():+.4f} ± {g[:, i].std():.4f}" for i in range(3)]
        print(f"| {fraction:.0%} | {n} | {name} | {len(g)} | {' | '.join(cells)} | {(g[:, 1] < 0).mean():.0%} "
              f"| {g[:, 3].mean():.0%} |")
    summary = {f"{fraction}/{name}": rows for (fraction, _, name), rows in pooled.items()}
    Path(args.run[0], "decision_val_size.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
