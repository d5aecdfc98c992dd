"""Use a saved model: logits for datasets, and :class:`Predictor` for new images."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from galaxytune.data.images import default_workers, iter_decoded
from galaxytune.data.readers.fits import is_other_band
from galaxytune.data.readers.folder import find_images
from galaxytune.data.transforms import N_DIHEDRAL, dihedral, mirrored
from galaxytune.files import atomic_path
from galaxytune.inference.saved import ModelInfo, load_model


@torch.no_grad()
def run_batches(fn: nn.Module, data: Dataset, batch_size: int, desc: str, workers: int = 0) -> torch.Tensor:
    """``fn`` applied in eval mode to the inputs of every (input, target) item of ``data``."""
    was_training = fn.training
    fn.eval()
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers)
    device = next(fn.parameters()).device
    out = [fn(x.to(device)).float().cpu() for x, _ in tqdm(loader, desc=desc, unit="batch", leave=False)]
    fn.train(was_training)
    return torch.cat(out)


class DihedralTTA(nn.Module):
    """``net``'s logits averaged over the 8 rotations and flips of its input.

    A mirrored view of a clockwise spiral looks anticlockwise, so before averaging, the logits
    of a mirrored view are put back in the original's class order (``mirror``, see
    :func:`galaxytune.data.transforms.mirror_permutation`); otherwise the average would blur
    every pair of classes that a flip swaps into one.
    """

    def __init__(self, net: nn.Module, mirror: list[int]):
        super().__init__()
        self.net, self.mirror = net, mirror

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = [self.net(dihedral(x, k)).float() for k in range(N_DIHEDRAL)]
        return torch.stack([v[:, self.mirror] if mirrored(k) else v for k, v in enumerate(views)]).mean(0)


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
        with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "predicted_class"] + [spreadsheet_safe(f"p_{c}") for c in self.classes])
            for p, label, probs in zip(self.paths, self.labels, self.probabilities):
                writer.writerow([spreadsheet_safe(str(p)), spreadsheet_safe(label)] + [f"{v:.6f}" for v in probs])


class Predictor:
    """A saved model ready for inference: ``galaxytune.load(run_dir).predict(images)``."""

    def __init__(self, net: nn.Module, info: ModelInfo):
        self.net, self.info = net.eval(), info

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        """A run folder (PyTorch) or an exported ``.onnx`` file (ONNX Runtime)."""
        if str(path).lower().endswith(".onnx"):
            from galaxytune.inference.onnx import OnnxNet

            net = OnnxNet(path)
            return cls(net, net.info)
        return cls(*load_model(path))

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
        return net(pixels).float().numpy()

    def predict(self, images, batch_size: int = 64, workers: int = -1, tta: bool | None = None) -> Predictions:
        """Predict image files or folders (str/Path or a list of them); ``tta``: see :meth:`logits`."""
        if isinstance(images, (str, Path)):
            images = [images]
        paths = find_images(list(images))
        if self.info.fits_config is not None:
            paths = [p for p in paths if not is_other_band(p, self.info.fits_config)]
        kept, logits, bad = [], [], []
        for idx, pixels, _, failed in iter_decoded(
            paths, self.info.image_size, self.info.center_crop, default_workers(workers), batch_size, "predict",
            self.info.fits_config,
        ):
            kept += [paths[i] for i in idx]
            bad += failed
            if len(idx):
                logits.append(self.logits(pixels, tta))
        k = len(self.classes)
        raw = np.concatenate(logits) if logits else np.zeros((0, k))
        return Predictions(kept, self.classes, self.info.rule.probabilities(raw), bad)
