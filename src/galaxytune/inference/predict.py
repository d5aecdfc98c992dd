"""Use a saved model: logits for datasets, and :class:`Predictor` for new images.

Prediction streams: :meth:`Predictor.stream` decodes one batch, predicts it and hands it on
before the next is decoded, and :func:`write_predictions` appends each batch's rows to the CSV
as they come, so a survey of any size goes through in the memory of a batch (plus the list of
paths, some hundred bytes per image). A cut-off run resumes (``resume=True``: the paths
already in the CSV are skipped), and :func:`shard` splits the input for n parallel jobs.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from galaxytune.console import interactive
from galaxytune.data.images import default_workers, iter_decoded
from galaxytune.data.readers.fits import is_other_band
from galaxytune.data.readers.folder import find_images
from galaxytune.errors import ConfigError, DataError
from galaxytune.files import WRITE_ERRNOS
from galaxytune.inference.saved import ModelInfo, load_model
from galaxytune.inference.tta import DihedralTTA

__all__ = ["DihedralTTA", "PredictedBatch", "Predictions", "Predictor", "csv_header", "done_paths",
           "inference_batch_size", "parse_shard", "run_batches", "shard", "write_predictions"]


def inference_batch_size(device: torch.device) -> int:
    """Images per batch for inference on ``device``: on a CPU 32, whose activations stay in its
    caches (MobileNetV1 at 96 px on 2 cores: about 330 images/s against 200 at 128); a GPU 128."""
    return 32 if device.type == "cpu" else 128


def inference_layout(net: nn.Module) -> nn.Module:
    """``net`` with its convolution weights in the channels-last memory layout (in place), which
    the convolutions then follow whatever the input's layout: on a CPU a conv net predicts about
    1.5 times faster so (MobileNetV1 at 96 px on 2 cores: 221 against 145 images/s). Saved
    weights are made contiguous as they are written, whatever their layout."""
    return net.to(memory_format=torch.channels_last)


@torch.no_grad()
def run_batches(fn: nn.Module, data: Dataset, desc: str, workers: int = 0,
                batch_size: int | None = None) -> torch.Tensor:
    """``fn`` applied in eval mode to the inputs of every (input, target) item of ``data``, in
    the faster channels-last layout (:func:`inference_layout`), in batches of ``batch_size``
    (None: :func:`inference_batch_size` for the device ``fn`` sits on); ``fn`` is handed back as
    it came, in eval or train mode and in the default layout, as networks are outside a fit."""
    was_training = fn.training
    inference_layout(fn).eval()
    device = next(fn.parameters()).device
    loader = DataLoader(data, batch_size=batch_size or inference_batch_size(device), num_workers=workers)
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=not interactive())
    out = [fn(x.to(device)).float().cpu() for x, _ in bar]
    fn.train(was_training).to(memory_format=torch.contiguous_format)
    return torch.cat(out)


def spreadsheet_safe(text: str) -> str:
    """Text that a spreadsheet shows as text: a leading '=', '+', '-' or '@' (a class name from
    someone else's model) would otherwise be run as a formula; a quote in front keeps it text."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


@dataclass
class Predictions:
    paths: list[Path]
    classes: list[str]
    probabilities: np.ndarray
    """(n, k) probabilities after the decision rule."""
    unreadable: list[tuple[Path, str]]

    @property
    def labels(self) -> list[str]:
        return [self.classes[i] for i in self.probabilities.argmax(axis=1)]

    def write_csv(self, path: Path) -> None:
        write_predictions([PredictedBatch(self.paths, self.probabilities, self.unreadable)], Path(path),
                          self.classes)


@dataclass
class PredictedBatch:
    paths: list[Path]
    probabilities: np.ndarray
    """(len(paths), k) probabilities after the decision rule."""
    unreadable: list[tuple[Path, str]]
    """Files of this batch that could not be decoded, and why."""


class Predictor:
    """A saved model ready for inference: ``galaxytune.load(run_dir).predict(images)``."""

    def __init__(self, net: nn.Module, info: ModelInfo, device: str | torch.device = "cpu"):
        self.net, self.info, self.device = net.eval(), info, torch.device(device)
        if isinstance(net, nn.Module):
            inference_layout(self.net.to(self.device))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Predictor:
        """A run folder (PyTorch, run on ``device``) or an exported ``.onnx`` file (ONNX Runtime, CPU)."""
        if str(path).lower().endswith(".onnx"):
            from galaxytune.inference.onnx import OnnxNet

            net = OnnxNet(path)
            return cls(net, net.info)
        return cls(*load_model(path), device=device)

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    def uses_tta(self, tta: bool | None) -> bool:
        """``tta``, or when None, what the model expects (on if its decision rule was fitted on TTA logits)."""
        return self.info.tta if tta is None else tta

    @torch.no_grad()
    def logits(self, pixels: torch.Tensor, tta: bool | None = None) -> np.ndarray:
        """Raw logits for a (n, 3, S, S) uint8 or [0, 1] float batch.

        With ``tta`` the logits are averaged over the 8 rotations and flips of the square (see
        :class:`DihedralTTA`), so that the prediction no longer depends on how the galaxy
        happens to lie in the cutout. None: as the model expects (:meth:`uses_tta`).
        """
        net = DihedralTTA(self.net, self.info.mirror) if self.uses_tta(tta) else self.net
        return net(pixels.to(self.device)).float().cpu().numpy()

    def image_paths(self, images) -> list[Path]:
        """The image files that ``images`` (files, folders, HDF5 files; str/Path or a list) stand
        for, in a fixed order (folders sorted), without the other bands of a FITS cutout."""
        if isinstance(images, (str, Path)):
            images = [images]
        paths = find_images(list(images))
        if self.info.fits_config is not None:
            paths = [p for p in paths if not is_other_band(p, self.info.fits_config)]
        return paths

    def decoding_workers(self, requested: int = -1) -> int:
        """``requested`` (>= 0), else: with the network on a GPU, CPUs - 1 (at most 8); on the CPU,
        only the cores that the network's own threads leave free. On 2 cores, one decoding worker
        beside PyTorch's 2 threads made prediction 0.7-0.85x a plain loop that decodes in turn with
        the network (docs/benchmarks.md); decoding in this process matched it."""
        if requested >= 0 or self.device.type != "cpu":
            return default_workers(requested)
        return min(default_workers(), max(0, (os.cpu_count() or 1) - torch.get_num_threads()))

    def stream(self, paths: list[Path], batch_size: int = 64, workers: int = -1,
               tta: bool | None = None) -> Iterator[PredictedBatch]:
        """Predictions for ``paths`` (image files, see :meth:`image_paths`) one batch at a time:
        each batch is decoded, predicted and handed on before the next is decoded (the decoding
        workers read at most a couple of batches ahead)."""
        rule = self.info.rule
        decoded = iter_decoded(
            paths, self.info.image_size, self.info.center_crop, self.decoding_workers(workers), batch_size, "predict",
            self.info.fits_config,
        )
        try:
            for idx, pixels, _, failed in decoded:
                probs = rule.probabilities(self.logits(pixels, tta)) if len(idx) else np.zeros((0, len(self.classes)))
                yield PredictedBatch([paths[i] for i in idx], probs, failed)
        finally:
            decoded.close()  # stops the decoding workers and clears the progress bar at once

    def predict(self, images, batch_size: int = 64, workers: int = -1, tta: bool | None = None) -> Predictions:
        """Predict image files or folders (str/Path or a list of them); ``tta``: see :meth:`logits`.

        All probabilities are kept in memory; for a survey, stream them to a CSV with
        :meth:`stream` and :func:`write_predictions` (as ``galaxytune predict`` does)."""
        kept, probs, bad = [], [], []
        for batch in self.stream(self.image_paths(images), batch_size, workers, tta):
            kept += batch.paths
            probs.append(batch.probabilities)
            bad += batch.unreadable
        k = len(self.classes)
        return Predictions(kept, self.classes, np.concatenate(probs) if probs else np.zeros((0, k)), bad)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (shard i of n, counted from 0) as ``(i, n)``."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ConfigError(f"--shard {text!r} must be i/n with 0 <= i < n, e.g. 0/4 (the first of 4 parts).")
    return i, n


def shard(paths: list, i: int, n: int) -> list:
    """Part ``i`` of ``n`` of ``paths``: the i-th of n consecutive, near-equal blocks, so the
    parts in order 0..n-1 are the whole list in its order. ``paths`` must be listed the same way
    in every job (the same arguments: folders are listed sorted, a catalog in its row order)."""
    return paths[i * len(paths) // n:(i + 1) * len(paths) // n]


def csv_header(classes: list[str]) -> list[str]:
    return ["path", "predicted_class"] + [spreadsheet_safe(f"p_{c}") for c in classes]


def _partial(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def done_paths(out: Path, classes: list[str]) -> set[str]:
    """The paths (as written in the ``path`` column) that an earlier run of ``galaxytune predict
    --out out`` already wrote, to be skipped by ``--resume``; empty when there is no such file."""
    path = _partial(out) if _partial(out).is_file() else out
    if not path.is_file():
        return set()
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return set()
        if header != csv_header(classes):
            raise DataError(f"{path} holds predictions of another model (columns {', '.join(header[:6])}); "
                            "--resume continues only a run of the same model. Choose another --out.")
        # A run cut off in the middle of a row leaves it without its line end: not done.
        return {row[0] for row in reader if len(row) == len(header)}


def _complete_rows_only(path: Path) -> None:
    """Cut a row that a killed run left half-written (no line end) off the end of ``path``."""
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(max(0, size - 1))
        if handle.read(1) == b"\n":
            return
        step, end = 1 << 16, size
        while end > 0:
            start = max(0, end - step)
            handle.seek(start)
            cut = handle.read(end - start).rfind(b"\n")
            if cut >= 0:
                handle.truncate(start + cut + 1)
                return
            end = start
        handle.truncate(0)


def write_predictions(batches: Iterable[PredictedBatch], out: Path, classes: list[str], resume: bool = False,
                      unreadable: list | None = None) -> int:
    """Write each batch's rows to the CSV ``out`` as it comes (flushed per batch); the number written.

    Rows go to ``out.partial`` first, renamed to ``out`` when all are written: an earlier file
    stays as it was until then, and a failed write (a full disk) leaves nothing behind. A run
    that is interrupted or killed leaves ``out.partial``: ``resume`` appends to it (or to a
    finished ``out``), after the last complete row. Unreadable files are added to ``unreadable``.
    """
    out = Path(out)
    partial = _partial(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if resume and not partial.is_file() and out.is_file():
        os.replace(out, partial)  # appended to as it is; renamed back at the end
    appending = resume and partial.is_file() and partial.stat().st_size > 0
    if appending:
        _complete_rows_only(partial)
        appending = partial.stat().st_size > 0
    written = 0
    try:
        with open(partial, "a" if appending else "w", newline="") as handle:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            if not appending:
                writer.writerow(csv_header(classes))
            for batch in batches:
                for p, probs in zip(batch.paths, batch.probabilities):
                    label = classes[int(np.argmax(probs))]
                    writer.writerow([spreadsheet_safe(str(p)), spreadsheet_safe(label)] + [f"{v:.6f}" for v in probs])
                if unreadable is not None:
                    unreadable += batch.unreadable
                handle.write(buffer.getvalue())  # whole rows only, one write per batch
                handle.flush()
                buffer.seek(0)
                buffer.truncate()
                written += len(batch.paths)
            handle.write(buffer.getvalue())
        os.replace(partial, out)
    except OSError as exc:
        getattr(batches, "close", lambda: None)()  # the progress bar goes before the error is printed
        if not appending:  # a file of this run only: nothing half-written stays behind
            partial.unlink(missing_ok=True)
        if exc.filename in (str(partial), partial) or (exc.filename is None and exc.errno in WRITE_ERRNOS):
            raise OSError(exc.errno, exc.strerror or str(exc), str(out)) from exc
        raise
    return written
