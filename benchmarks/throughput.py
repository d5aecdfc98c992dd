"""Training and inference throughput: a naive timm + PIL loop against galaxytune's own paths.

In one process, for each input size, trains on the same N cutouts for ``--epochs`` epochs with

* naive: a ``Dataset`` that PIL-opens, resizes, flips and turns each file every epoch, the
  default ``DataLoader`` (no workers), fp32 NCHW, ``torch.optim.AdamW`` (what a first script does);
* galaxytune: ``galaxytune.train`` with the finetune stage alone (every layer, its default
  settings) on an image folder of the same cutouts (labels cycled through 5 classes: speed does
  not depend on them), whole run timed and the finetune fit's own seconds read from the run;

then predicts the same N cutouts with

* naive: PIL opens, converts and resizes each file in the main process, torchvision-style
  normalisation, a timm model, softmax, rows kept in a list (what a first script does);
* galaxytune PyTorch / ONNX fp32 / ONNX int8: ``Predictor.stream`` + ``write_predictions``,
  exactly the path of ``galaxytune predict`` (decoding workers, batches streamed to a CSV).

and prints Markdown tables of images/s, the ratio to the naive loop, and the peak memory
(PSS of this process plus its decoding workers, sampled every 50 ms) while each ran. The model
is ``--arch`` with ``--weights`` (or random) and a random 5-class head: throughput does not
depend on what the head learned. The int8 model is calibrated on 64 of the cutouts listed as
the validation split of a scratch run folder. The cutouts are ``--images`` (a folder, repeated
to N by hard links) or generated noise-and-blob PNGs.

    python benchmarks/throughput.py --n 2000 --sizes 64 \\
        --images ../shared/data/gz2_sdss_dr16_cutouts/images \\
        --weights ../shared/weights/mobilenetv1_100.tf_quant_in1k.safetensors
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import tempfile
import threading
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

import galaxytune
from galaxytune.data.readers.folder import is_image
from galaxytune.inference.predict import Predictor, write_predictions
from galaxytune.inference.saved import ModelInfo, save_model
from galaxytune.models.backbone import create_classifier

CLASSES = ["a", "b", "c", "d", "e"]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _memory(process: psutil.Process) -> int:
    """Proportional set size where the system gives it (pages shared with the decoding workers,
    forked from this process, counted once in all), else the resident set size."""
    try:
        return process.memory_full_info().pss
    except (AttributeError, psutil.AccessDenied):
        return process.memory_info().rss


class PeakRSS:
    """Peak memory (MiB; PSS where available, see :func:`_memory`) of this process and its
    children while the block runs."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _sample(self) -> int:
        me = psutil.Process()
        total = _memory(me)
        for child in me.children(recursive=True):
            try:
                total += _memory(child)
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())

    @property
    def mib(self) -> float:
        return self.peak / 2**20


def make_cutouts(folder: Path, n: int, source: Path | None, side: int = 128) -> list[Path]:
    """N cutout files: hard links to ``source``'s images (cycled), or generated ones."""
    folder.mkdir(parents=True, exist_ok=True)
    if source is not None:
        base = sorted(p for p in source.rglob("*") if p.is_file() and is_image(p))[:n]
    else:
        rng, base = np.random.default_rng(0), []
        yy, xx = np.mgrid[:side, :side]
        for i in range(min(n, 256)):
            cx, cy, r = rng.uniform(side * 0.4, side * 0.6, 2).tolist() + [rng.uniform(4, side / 5)]
            blob = 200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
            img = np.clip(blob[..., None] * rng.uniform(0.5, 1, 3) + rng.normal(20, 8, (side, side, 3)), 0, 255)
            path = folder / f"base_{i}.png"
            Image.fromarray(img.astype(np.uint8)).save(path)
            base.append(path)
    paths = []
    for i in range(n):
        path = folder / f"cutout_{i:07d}{base[i % len(base)].suffix}"
        if not path.exists():
            os.link(base[i % len(base)], path)
        paths.append(path)
    return paths


def naive(net: torch.nn.Module, paths: list[Path], size: int, batch_size: int) -> list:
    """A first script's loop: decode in the main process, one file at a time."""
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    rows = []
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            batch = []
            for path in paths[start:start + batch_size]:
                im = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
                batch.append((torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255 - mean) / std)
            probs = torch.softmax(net(torch.stack(batch)), dim=1)
            rows += [(str(p), int(q.argmax())) for p, q in zip(paths[start:start + batch_size], probs)]
    return rows


class NaiveFiles(Dataset):
    """A first script's training set: every item decoded, resized and augmented by PIL, every epoch."""

    def __init__(self, paths: list[Path], size: int):
        self.paths, self.size = paths, size
        self.mean, self.std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        im = Image.open(self.paths[i]).convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)
        if torch.rand(()) < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        im = im.rotate(90 * int(torch.randint(4, ())))
        x = (torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255 - self.mean) / self.std
        return x, i % len(CLASSES)


def naive_training(arch: str, weights: str, paths: list[Path], size: int, epochs: int, batch_size: int) -> None:
    net = create_classifier(arch, len(CLASSES), weights=weights, mean=MEAN, std=STD).backbone.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for x, y in DataLoader(NaiveFiles(paths, size), batch_size=batch_size, shuffle=True, drop_last=True):
            optimizer.zero_grad()
            F.cross_entropy(net(x), y).backward()
            optimizer.step()


def labelled_folder(folder: Path, paths: list[Path], held_out: int) -> Path:
    """The cutouts as an image folder: ``held_out`` each in val/ and test/ (scored, not timed), the
    rest in train/, each class folder in turn."""
    for i, path in enumerate(paths):
        split = "val" if i < held_out else "test" if i < 2 * held_out else "train"
        target = folder / split / CLASSES[i % len(CLASSES)] / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(path, target)
    return folder


def galaxytune_training(data: Path, out: Path, arch: str, weights: str, size: int, epochs: int,
                        batch_size: int, facts: dict) -> None:
    """``galaxytune.train``, the finetune stage alone; ``facts['fit']``: its fit's seconds."""
    config = {"data": {"path": str(data), "image_size": size, "disk_cache": "off", "leakage": "off"},
              "model": {"name": arch, "weights": weights, "mean": MEAN, "std": STD},
              "transfer": {"enabled": False}, "decision": {"enabled": False, "tta": False},
              "finetune": {"epochs": epochs, "patience": epochs, "batch_size": batch_size, "guard": False},
              "trainer": {"progress": False}}
    result = galaxytune.train(config, out, overwrite=True)
    facts["fit"] = next(s.fit_seconds for s in result.stages if s.name == "finetune")


def scratch_run(folder: Path, arch: str, weights: str, size: int, val: list[Path]) -> Path:
    """A run folder holding an (untrained-head) model and a splits.csv, for export --int8."""
    net = create_classifier(arch, len(CLASSES), weights=weights, mean=MEAN, std=STD)
    save_model(net, ModelInfo(arch, CLASSES, size, 1.0, MEAN, STD), folder / "models")
    with open(folder / "splits.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows([str(p), CLASSES[i % len(CLASSES)], "val"] for i, p in enumerate(val))
    return folder


def galaxytune_path(predictor: Predictor, paths: list[Path], out: Path, batch_size: int, workers: int) -> None:
    """What ``galaxytune predict`` does: stream batches to the CSV."""
    write_predictions(predictor.stream(paths, batch_size, workers), out, predictor.classes)


def onnx_predictor(path, threads: int) -> Predictor:
    from galaxytune.inference.onnx import OnnxNet

    net = OnnxNet(path, threads)
    return Predictor(net, net.info)


def timed(label: str, n: int, results: list, size: int, fn, *fn_args) -> None:
    with PeakRSS() as rss:
        start = time.perf_counter()
        fn(*fn_args)
        seconds = time.perf_counter() - start
    results.append({"size": size, "method": label, "rate": n / seconds, "seconds": seconds, "rss": rss.mib})
    print(f"  {size} px {label}: {n / seconds:.0f} images/s ({seconds:.1f} s), peak memory {rss.mib:.0f} MiB",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="cutouts to predict (default: 2000)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128], help="input sizes in px")
    parser.add_argument("--images", type=Path, help="folder of real cutouts, repeated to N (default: generated)")
    parser.add_argument("--arch", default="mobilenetv1_100")
    parser.add_argument("--weights", default="none", help="backbone weights file (default: random)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=-1, help="galaxytune's decoding workers (default: auto)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs of each method (default: 2)")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="methods to leave out: train-naive train (training); naive torch onnx int8 (inference)")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of torch and ONNX Runtime (default: their own default, one per core)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="galaxytune-throughput-"))
    paths = make_cutouts(work / "cutouts", args.n, args.images)
    print(f"{len(paths)} cutouts in {work / 'cutouts'}; torch threads {torch.get_num_threads()}, "
          f"CPUs {os.cpu_count()}", flush=True)
    training: list[dict] = []
    held_out = 64
    trains = not {"train-naive", "train"} <= set(args.skip)
    data = labelled_folder(work / "folder", paths, held_out) if trains else None
    trained = (len(paths) - 2 * held_out) * args.epochs
    for size in args.sizes if trains else []:
        common = (trained, training, size)
        if "train-naive" not in args.skip:
            timed("naive timm + PIL loop", *common, naive_training, args.arch, args.weights, paths[2 * held_out:],
                  size, args.epochs, args.batch_size)
        if "train" not in args.skip:
            facts: dict = {}
            timed("galaxytune train (whole run)", *common, galaxytune_training, data, work / f"train{size}",
                  args.arch, args.weights, size, args.epochs, args.batch_size, facts)
            training.append({**training[-1], "method": "galaxytune finetune fit alone", "rss": float("nan"),
                             "seconds": facts["fit"], "rate": trained / facts["fit"]})
    if trains:
        print_table(f"Training, {args.epochs} epochs of {len(paths) - 2 * held_out} cutouts", training)

    results: list[dict] = []
    for size in args.sizes:
        run = scratch_run(work / f"run{size}", args.arch, args.weights, size, paths[:128])
        out = work / f"pred{size}.csv"
        predictor = Predictor.load(run)
        common = (len(paths), results, size)
        stream = (paths, out, args.batch_size, args.workers)
        if "naive" not in args.skip:
            timed("naive timm + PIL loop", *common, naive, predictor.net.backbone, paths, size, args.batch_size)
        if "torch" not in args.skip:
            timed("galaxytune PyTorch", *common, galaxytune_path, predictor, *stream)
        if "onnx" in args.skip and "int8" in args.skip:
            continue
        from galaxytune.inference.onnx import export_onnx
        from galaxytune.inference.quantize import export_int8

        fp32 = export_onnx(run)
        if "onnx" not in args.skip:
            timed("galaxytune ONNX fp32", *common, galaxytune_path, onnx_predictor(fp32, args.threads), *stream)
        if "int8" not in args.skip:
            with redirect_stdout(io.StringIO()):
                report = export_int8(run, fp32, calibration=64)
            print("  " + " ".join(report.lines()), flush=True)
            timed("galaxytune ONNX int8", *common, galaxytune_path, onnx_predictor(report.path, args.threads), *stream)
            results[-1]["note"] = f"agrees with fp32 on {report.agreement:.3f} of {report.held_back_images}"

    print_table(f"Inference, {len(paths)} cutouts", results)


def print_table(title: str, results: list[dict]) -> None:
    print(f"\n{title}\n\n| size | method | images/s | × naive | wall (s) | peak memory (MiB, PSS) |")
    print("|---|---|---|---|---|---|")
    for row in results:
        base = next((r["rate"] for r in results if r["size"] == row["size"] and r["method"].startswith("naive")),
                    None)
        ratio = f"{row['rate'] / base:.2f}" if base else "–"
        note = f" ({row['note']})" if row.get("note") else ""
        memory = "–" if row["rss"] != row["rss"] else f"{row['rss']:.0f}"  # NaN: not measured alone
        print(f"| {row['size']} | {row['method']}{note} | {row['rate']:.0f} | {ratio} | {row['seconds']:.1f} "
              f"| {memory} |")


if __name__ == "__main__":
    main()
