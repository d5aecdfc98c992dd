"""Baseline: a logistic regression on frozen, pooled backbone features (a linear probe).

The cheapest thing a user could do instead of galaxytune: features from the pretrained
backbone, computed once, and scikit-learn's logistic regression on them. Same data, same
splits (galaxytune's own, from the preset named) and same weights as the recipe; the inverse
regularisation C is chosen on validation macro-F1, test is reported only.

    python benchmarks/probe.py --config configs/gz2_cpu.yaml \
        --data ../shared/data/gz2_sdss_dr16_cutouts/labels.csv \
        --weights ../shared/weights/mobilenetv1_100.tf_quant_in1k.safetensors --image-size 128

Prints one JSON line: the chosen C, val and test accuracy and macro-F1, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import time

from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from galaxytune.config import load_config
from galaxytune.data.prepare import prepare
from galaxytune.evaluation.metrics import score
from galaxytune.inference.predict import run_batches
from galaxytune.models.backbone import create_classifier
from galaxytune.training.pipeline import Features


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--image-size", type=int, default=128)
    args = p.parse_args(argv)
    start = time.perf_counter()
    cfg = load_config(args.config, [f"data.image_size={args.image_size}", "data.leakage=off"],
                      flags={"data": {"path": args.data}, "model": {"weights": args.weights}})
    data = prepare(cfg.data, None)
    m = cfg.model
    net = create_classifier(m.name, len(data.classes), m.weights, m.mean, m.std, 0.0, m.kwargs,
                            cfg.data.stretch, cfg.data.stretch_softening)
    feats = {split: run_batches(Features(net), data.sets[split], f"features {split}").numpy()
             for split in ("train", "val", "test")}
    y = {split: data.sets[split].targets.numpy() for split in feats}
    scaler = StandardScaler().fit(feats["train"])
    x = {split: scaler.transform(f) for split, f in feats.items()}
    best = None
    for c in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0):
        probe = LogisticRegression(C=c, max_iter=2000).fit(x["train"], y["train"])
        val = score(y["val"], probe.predict(x["val"]), "macro_f1")
        if best is None or val > best[0]:
            best = (val, c, probe)
    _, c, probe = best
    result = {"C": c, "image_size": args.image_size, "seconds": round(time.perf_counter() - start, 1)}
    for split in ("val", "test"):
        pred = probe.predict(x[split])
        result.update({f"{split}_{metric}": round(score(y[split], pred, metric), 4)
                       for metric in ("accuracy", "macro_f1")})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
