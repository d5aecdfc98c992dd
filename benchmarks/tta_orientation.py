"""How much does a trained model's prediction depend on how the galaxy lies in its cutout?

For the test split of a run (its own ``splits.csv``), predicts every image under each of the 8
rotations and flips of the square, and reports, without and with test-time augmentation:
accuracy and macro-F1, the share of images whose predicted class changes with orientation,
and the spread of the predicted probabilities across orientations.

    python benchmarks/tta_orientation.py --run runs/bench_gz2_v2/recipe
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from galaxytune.data.images import decode_all
from galaxytune.data.transforms import N_DIHEDRAL, dihedral
from galaxytune.evaluation.metrics import classification_metrics
from galaxytune.inference.predict import Predictor
from galaxytune.run_folder import RunFolder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder of a trained model")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    run = Path(args.run)
    predictor = Predictor.load(run)
    rows = [r for r in csv.DictReader(open(RunFolder(run).splits)) if r["split"] == args.split]
    decoded = decode_all([Path(r["path"]) for r in rows], predictor.info.image_size, predictor.info.center_crop,
                         cache=True, workers=1, desc="decode")
    index = {c: i for i, c in enumerate(predictor.classes)}
    y = np.array([index[rows[i]["label"]] for i in decoded.keep])
    rule = predictor.info.rule
    # probs[k] = probabilities (after the decision rule) of every image turned by transform k
    probs = []
    with torch.no_grad():
        for k in range(N_DIHEDRAL):
            logits = np.concatenate([predictor.logits(dihedral(batch, k)) for batch in decoded.pixels.split(128)])
            probs.append(rule.probabilities(logits))
    probs = np.stack(probs)
    tta_logits = np.concatenate([predictor.logits(batch, tta=True) for batch in decoded.pixels.split(128)])
    tta = rule.probabilities(tta_logits)
    single = [classification_metrics(y, p) for p in probs]
    labels = probs.argmax(2)
    changes = (labels != labels[0]).any(axis=0).mean()
    spread = probs.max(axis=0) - probs.min(axis=0)
    print(f"run: {run}, split: {args.split}, n={len(y)}")
    print("| | accuracy | macro-F1 | ECE |")
    print("|---|---|---|---|")
    acc = np.array([m["accuracy"] for m in single])
    f1 = np.array([m["macro_f1"] for m in single])
    ece = np.array([m["ece"] for m in single])
    first = single[0]
    print(f"| one view, as stored | {first['accuracy']:.4f} | {first['macro_f1']:.4f} | {first['ece']:.4f} |")
    print(f"| one view, over the 8 orientations: mean ± std | {acc.mean():.4f} ± {acc.std():.4f} "
          f"| {f1.mean():.4f} ± {f1.std():.4f} | {ece.mean():.4f} ± {ece.std():.4f} |")
    m = classification_metrics(y, tta)
    print(f"| TTA (8 views, logits averaged) | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {m['ece']:.4f} |")
    print(f"\nimages whose predicted class changes with orientation (one view): {changes:.1%}")
    print(f"largest change of a class probability across orientations: mean {spread.max(axis=1).mean():.3f}, "
          f"95th percentile {np.percentile(spread.max(axis=1), 95):.3f} (with TTA: 0 by construction)")


if __name__ == "__main__":
    main()
