"""Benchmark: does declaring that a mirror flip swaps gz1's two spiral chirality classes help them?

Trains the recipe twice on gz1 (an image folder of class folders), with the same split and seed:

- **plain**: rotations and flips that keep every label, so a mirrored clockwise spiral is still
  labelled clockwise and the two chirality classes get contradictory training images;
- **swap**: ``finetune.mirror_swap=[[spiral_clockwise, spiral_anticlockwise]]``, so mirrored
  images take the other class of the pair.

Each final network is scored on the test split through the saved model (``Predictor``, the
path ``galaxytune evaluate`` takes), without and with TTA; with TTA the swap run's saved
permutation puts mirrored views back in class order. Reported: recall and F1 of the two
chirality classes, confusions between them, accuracy and macro-F1, and a paired bootstrap of
swap minus plain on the same test images.

Both runs switch off the decision rule (its per-class offsets, tuned on val, would move the
chirality classes' recall on their own) and the finetune guard (which could hand both runs the
same transfer-stage weights); ``--override`` changes that for a variant of the benchmark.

    OMP_NUM_THREADS=1 python benchmarks/gz1_chirality.py --data ../shared/data/gz1_sdss_smallGZ1 \\
        --weights ../shared/weights/mobilenetv1_100.tf_quant_in1k.safetensors --out runs/bench_gz1_chirality

Writes ``OUT/plain/`` and ``OUT/swap/`` (run folders) and ``OUT/summary.json``, and prints a
Markdown section.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import galaxytune
from galaxytune.evaluation.bootstrap import paired_bootstrap
from galaxytune.evaluation.evaluate import evaluate
from galaxytune.evaluation.metrics import classification_metrics
from galaxytune.inference.predict import Predictor
from galaxytune.run_folder import RunFolder

CHIRALITY = ("spiral_clockwise", "spiral_anticlockwise")
SHORT = {"spiral_clockwise": "CW", "spiral_anticlockwise": "ACW"}
VARIANTS = {"plain": [], "swap": [list(CHIRALITY)]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="gz1 image folder (class folders, or train/val/test)")
    p.add_argument("--weights", required=True, help="mobilenetv1_100 safetensors file, or 'none'")
    p.add_argument("--out", required=True, help="folder for OUT/plain, OUT/swap and OUT/summary.json")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4, help="finetune epochs")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra galaxytune setting for both runs (e.g. transfer.epochs=1 for a smoke test)")
    return p.parse_args(argv)


def train_variant(args: argparse.Namespace, name: str) -> tuple[Path, float]:
    weights = args.weights if args.weights == "none" else str(Path(args.weights).resolve())
    overrides = [
        f"data.image_size={args.image_size}", "data.num_workers=0", f"model.weights={weights}",
        "model.kwargs={pad_type: same}", f"finetune.epochs={args.epochs}", "finetune.guard=false",
        f"finetune.mirror_swap={json.dumps(VARIANTS[name])}", "decision.enabled=false",
        f"trainer.seed={args.seed}", "trainer.progress=false", *args.override,
    ]
    cfg = galaxytune.load_config(overrides=overrides, flags={"data": {"path": str(Path(args.data).resolve())}})
    start = time.perf_counter()
    galaxytune.train(cfg, Path(args.out) / name)
    return Path(args.out) / name, time.perf_counter() - start


def class_scores(y: np.ndarray, pred: np.ndarray, c: int) -> dict[str, np.ndarray]:
    """Recall and F1 of class ``c`` for label arrays of shape (n,) or (resamples, n)."""
    tp = ((y == c) & (pred == c)).sum(-1)
    support, predicted = (y == c).sum(-1), (pred == c).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"recall": tp / support, "f1": 2 * tp / (support + predicted)}


def chirality_scores(y: np.ndarray, pred: np.ndarray, index: dict[str, int]) -> dict[str, np.ndarray]:
    per_class = {c: class_scores(y, pred, index[c]) for c in CHIRALITY}
    out = {f"{SHORT[c]}_{m}": s[m] for c, s in per_class.items() for m in ("recall", "f1")}
    out["chirality_f1"] = np.mean([s["f1"] for s in per_class.values()], axis=0)
    return out


def paired_chirality(y, pred_a, pred_b, index, n_boot: int, seed: int) -> dict[str, dict[str, float]]:
    """B minus A on each chirality score: observed, 95% interval and P(B not better)."""
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_boot, len(y)))
    a, b = chirality_scores(y[idx], pred_a[idx], index), chirality_scores(y[idx], pred_b[idx], index)
    full_a, full_b = chirality_scores(y, pred_a, index), chirality_scores(y, pred_b, index)
    out = {}
    for key in a:
        diff = b[key] - a[key]
        diff = diff[~np.isnan(diff)]  # resamples without a class in them
        lo, hi = np.percentile(diff, [2.5, 97.5])
        out[key] = {"delta": float(full_b[key] - full_a[key]), "ci_low": float(lo), "ci_high": float(hi),
                    "p_not_better": float((diff <= 0).mean())}
    return out


def score_run(run: Path, data: str, tta: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    predictor = Predictor.load(run)
    result = evaluate(predictor, data, "test", tta=tta, run_dir=run)
    return result.y_true, result.predictions.probabilities, [str(p) for p in result.predictions.paths]


def summarise(y: np.ndarray, probs: np.ndarray, index: dict[str, int]) -> dict[str, float]:
    pred = probs.argmax(1)
    cw, acw = (index[c] for c in CHIRALITY)
    row = {k: float(v) for k, v in chirality_scores(y, pred, index).items()}
    overall = classification_metrics(y, probs)
    row["accuracy"], row["macro_f1"] = overall["accuracy"], overall["macro_f1"]
    row["CW_ACW_confusions"] = int(((y == cw) & (pred == acw)).sum() + ((y == acw) & (pred == cw)).sum())
    return row


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    runs, seconds = {}, {}
    for name in VARIANTS:
        runs[name], seconds[name] = train_variant(args, name)
    if RunFolder(runs["plain"]).splits.read_text() != RunFolder(runs["swap"]).splits.read_text():
        raise SystemExit("The two runs used different splits: the comparison would not be paired.")
    classes = Predictor.load(runs["plain"]).classes
    index = {c: i for i, c in enumerate(classes)}
    results, comparisons = {}, {}
    for tta in (False, True):
        scored = {name: score_run(run, args.data, tta) for name, run in runs.items()}
        (y, plain, paths), (y_swap, swap, paths_swap) = scored["plain"], scored["swap"]
        if paths != paths_swap or not np.array_equal(y, y_swap):
            raise SystemExit("The two runs were scored on different test images.")
        mode = "tta" if tta else "one_view"
        results[mode] = {name: summarise(y, probs, index) for name, (_, probs, _) in scored.items()}
        comparisons[mode] = {
            **{m: paired_bootstrap(y, plain, swap, m, n_boot=args.n_boot, seed=args.seed)
               for m in ("accuracy", "macro_f1")},
            **paired_chirality(y, plain.argmax(1), swap.argmax(1), index, args.n_boot, args.seed),
        }
    summary = {"args": vars(args), "classes": classes, "n_test": int(len(y)), "train_seconds": seconds,
               "results": results, "swap_minus_plain": comparisons}
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    print(markdown(summary))


def markdown(summary: dict) -> str:
    columns = ["accuracy", "macro_f1", "CW_recall", "CW_f1", "ACW_recall", "ACW_f1", "CW_ACW_confusions"]
    lines = [f"test n={summary['n_test']}; train seconds: "
             + ", ".join(f"{k} {v:.0f}" for k, v in summary["train_seconds"].items()), "",
             "| run | TTA | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for mode, rows in summary["results"].items():
        for name, row in rows.items():
            cells = [f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
            lines.append(f"| {name} | {'8 views' if mode == 'tta' else 'no'} | " + " | ".join(cells) + " |")
    lines += ["", "Swap minus plain (paired bootstrap on the test images):", ""]
    for mode, comparison in summary["swap_minus_plain"].items():
        for metric, r in comparison.items():
            lines.append(f"- {'TTA' if mode == 'tta' else 'one view'}, {metric}: {r['delta']:+.4f} "
                         f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], P(no gain) {r['p_not_better']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
