"""Benchmark: the class from the question head's vote fractions, against the class head.

GZ2's ``derived_class`` is a fixed rule on the vote fractions (smooth if smooth >= 0.5; edge-on
if features >= 0.5 and edge-on yes >= 0.5; face-on spiral or no spiral by t04 >= 0.5; else
uncertain). A finetuned gz2 run with the question head (``configs/gz2_cpu.yaml``) keeps that
head in its best finetune checkpoint, so the class can also be read off its predicted fractions.
For each run folder given, on the run's own val and test splits, with the 8-view TTA of the run,
this scores:

* class head: the run's class logits (TTA, before the decision rule);
* rule on fractions: the catalog's rule applied to the predicted fractions (Dirichlet means);
* tree probabilities: P(smooth) = f_smooth, P(edge-on) = f_features * f_yes, ... and
  P(uncertain) = 1 - f_smooth - f_features, the most probable taken;
* mean: the class head's probabilities averaged with the tree probabilities.

    python benchmarks/gz2_question_classes.py runs/final/gz2/preset/seed0 runs/final/gz2/preset/seed1 ...

Prints one Markdown row per method: val and test accuracy and macro-F1, mean ± std over runs.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from galaxytune.config import load_config
from galaxytune.data.prepare import prepare
from galaxytune.data.questions import answer_slices
from galaxytune.data.transforms import N_DIHEDRAL, dihedral
from galaxytune.evaluation.metrics import score
from galaxytune.models.backbone import create_classifier
from galaxytune.run_folder import RunFolder

TREE = ("smooth", "disk_edge_on", "disk_face_on_spiral", "disk_face_on_no_spiral", "uncertain")


def heads(folder: RunFolder) -> dict:
    """Class logits and question-head fractions (8-view means) of the run's val and test images."""
    cfg = load_config(folder.config)
    data = prepare(cfg.data, None)
    slices = answer_slices(data.questions)
    net = create_classifier(cfg.model.name, len(data.classes), cfg.model.weights, cfg.model.mean, cfg.model.std,
                            cfg.model.drop_rate, cfg.model.kwargs, cfg.data.stretch, cfg.data.stretch_softening)
    net.add_question_head(slices[-1][1])
    state = torch.load(folder.best_checkpoint("finetune"), map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    net.eval()
    answers = [f"{q.name}:{a}" for q in data.questions for a in q.answers]
    out = {"classes": data.classes}
    for split in ("val", "test"):
        images = data.sets[split]
        logits, fractions = [], []
        with torch.no_grad():
            for start in range(0, len(images), 128):
                x = torch.stack([images[i][0] for i in range(start, min(start + 128, len(images)))])
                views = [net.forward_with_questions(dihedral(x, k)) for k in range(N_DIHEDRAL)]
                logits.append(torch.stack([v[0] for v in views]).mean(0))
                fractions.append(torch.stack([dirichlet_means(v[1], slices) for v in views]).mean(0))
        f = torch.cat(fractions).numpy()
        out[split] = (images.targets.numpy(), torch.cat(logits).numpy(), {a: f[:, i] for i, a in enumerate(answers)})
    return out


def dirichlet_means(logits: torch.Tensor, slices: list[tuple[int, int]]) -> torch.Tensor:
    """Each question's expected vote fractions under the head's Dirichlet (training/losses.py)."""
    alpha = 1 + 99 * torch.sigmoid(logits)
    return torch.cat([alpha[:, s:e] / alpha[:, s:e].sum(1, keepdim=True) for s, e in slices], dim=1)


def predictions(classes: list[str], logits: np.ndarray, f: dict) -> dict[str, np.ndarray]:
    smooth, features = f["t01_smooth_or_features:a01_smooth"], f["t01_smooth_or_features:a02_features_or_disk"]
    edge_on, spiral = f["t02_edgeon:a04_yes"], f["t04_spiral:a08_spiral"]
    index = {c: classes.index(c) for c in TREE}
    rule = np.full(len(smooth), index["uncertain"])
    disk = (smooth < 0.5) & (features >= 0.5)
    rule[smooth >= 0.5] = index["smooth"]
    rule[disk & (edge_on >= 0.5)] = index["disk_edge_on"]
    rule[disk & (edge_on < 0.5) & (spiral >= 0.5)] = index["disk_face_on_spiral"]
    rule[disk & (edge_on < 0.5) & (spiral < 0.5)] = index["disk_face_on_no_spiral"]
    tree = np.zeros_like(logits)
    face_on = features * (1 - edge_on)
    for name, p in zip(TREE, (smooth, features * edge_on, face_on * spiral, face_on * (1 - spiral),
                              1 - smooth - features)):
        tree[:, index[name]] = p
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return {"class head": logits.argmax(1), "rule on fractions": rule, "tree probabilities": tree.argmax(1),
            "mean of class head and tree": (probs + tree).argmax(1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    args = p.parse_args()
    torch.set_num_threads(2)
    results: dict[str, list[list[float]]] = {}
    for run in args.runs:
        found = heads(RunFolder(run))
        rows = {}
        for split in ("val", "test"):
            y, logits, fractions = found[split]
            for name, pred in predictions(found["classes"], logits, fractions).items():
                rows.setdefault(name, []).extend([score(y, pred, "accuracy"), score(y, pred, "macro_f1")])
        for name, values in rows.items():
            results.setdefault(name, []).append(values)
    print("| classes from | val acc | val macro-F1 | test acc | test macro-F1 | runs |\n|---|---|---|---|---|---|")
    for name, per_run in results.items():
        cells = [f"{statistics.mean(c):.3f} ± {statistics.stdev(c):.3f}" if len(c) > 1 else f"{c[0]:.3f}"
                 for c in zip(*per_run)]
        print(f"| {name} | {' | '.join(cells)} | {len(per_run)} |")


if __name__ == "__main__":
    main()
