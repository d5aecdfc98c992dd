"""ONNX export of a saved model, and the exported file used through ONNX Runtime.

The graph takes uint8 images (N, 3, S, S), normalises them itself and returns both the raw
single-view logits and the probabilities after the decision rule, so an ONNX user gets exactly
what ``galaxytune predict`` gives: for a model whose rule was fitted on TTA logits
(``decision.tta``) the probabilities average the 8 rotations and flips inside the graph. The
model description (classes, input size, crop, decision rule, mirror pairs, FITS settings)
travels inside the file as metadata: the .onnx file alone is enough.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from galaxytune.decision import DecisionRule
from galaxytune.errors import ModelError
from galaxytune.files import atomic_path
from galaxytune.inference.saved import ModelInfo, load_model, model_folder
from galaxytune.inference.tta import DihedralTTA

INFO_KEY = "galaxytune_model_info"
TOLERANCE = 1e-4


class _WithDecisionRule(nn.Module):
    def __init__(self, net: nn.Module, rule: DecisionRule, k: int, tta: DihedralTTA | None):
        super().__init__()
        self.net, self.tta = net, tta
        self.register_buffer("temperature", torch.tensor(float(rule.temperature)))
        self.register_buffer("offsets", torch.tensor(rule.offsets or [0.0] * k, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tta is None:
            logits = ruled = self.net(images)
        else:  # one pass of the network over the 8 views; view 0 is the plain image
            views = self.tta.views(images)
            logits, ruled = views[0], views.mean(0)
        return logits, torch.softmax(ruled / self.temperature + self.offsets, dim=1)


def export_onnx(run_dir: str | Path, out: str | Path | None = None, opset: int = 18) -> Path:
    """Write the run's model as ONNX (default ``models/model.onnx``), checked against PyTorch."""
    net, info = load_model(run_dir)
    out = Path(out) if out else model_folder(run_dir) / "model.onnx"
    tta = DihedralTTA(net, info.mirror, together=True) if info.tta else None
    wrapped = _WithDecisionRule(net, info.rule, len(info.classes), tta).eval()
    example = torch.zeros((2, 3, info.image_size, info.image_size), dtype=torch.uint8)
    with atomic_path(out) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's own progress notes
            try:
                program = torch.onnx.export(
                    wrapped, (example,), input_names=["images"], output_names=["logits", "probabilities"],
                    dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset, dynamo=True,
                    verbose=False,
                )
            # torch.export or the translation failed (OnnxExporterError, a RuntimeError), or an operator's
            # ONNX function returned the wrong kind of value (TypeError).
            except (RuntimeError, TypeError) as exc:
                raise ModelError(f"{info.architecture} could not be exported to ONNX (opset {opset}): "
                                 f"{type(exc).__name__}: {str(exc)[:300]}. Try another --opset.") from exc
        program.model.metadata_props[INFO_KEY] = json.dumps(asdict(info))
        program.save(str(tmp), external_data=False)
        _check_against_torch(tmp, wrapped, info)
    return out


def _check_against_torch(path: Path, wrapped: nn.Module, info: ModelInfo) -> None:
    """An export that does not reproduce the PyTorch model must not be written."""
    images = torch.randint(0, 256, (3, 3, info.image_size, info.image_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = [t.numpy() for t in wrapped(images)]
    got = OnnxNet(path).session.run(None, {"images": images.numpy()})
    worst = max(float(np.abs(a - b).max()) for a, b in zip(expected, got))
    if worst > TOLERANCE * max(1.0, float(np.abs(expected[0]).max())):
        raise ModelError(f"The ONNX export of {info.architecture} differs from PyTorch by {worst:.2g}; not written.")


def _ort_errors() -> tuple[type[Exception], ...]:
    """What ONNX Runtime raises on a model it cannot load: its own classes (InvalidProtobuf,
    InvalidGraph, Fail ...), none of them an OSError or a RuntimeError."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception))


class OnnxNet:
    """An exported model run by ONNX Runtime, with the call interface of the PyTorch network
    (uint8 tensor in, logits out), so :class:`~galaxytune.inference.predict.Predictor` can
    use either."""

    def __init__(self, path: str | Path, threads: int = 0):
        """``threads``: ONNX Runtime's threads within an operator (0: its default, one per core)."""
        import onnxruntime

        if not Path(path).is_file():
            raise ModelError(f"{path} does not exist; write it with `galaxytune export --model RUN --out {path}`.")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except _ort_errors() as exc:  # not an ONNX file, truncated, unsupported opset
            raise ModelError(f"{path} is not a loadable ONNX model ({exc}).") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if INFO_KEY not in meta:
            raise ModelError(f"{path} was not exported by galaxytune (no {INFO_KEY} metadata); "
                             "export it with `galaxytune export --model RUN`.")
        try:
            self.info = ModelInfo(**json.loads(meta[INFO_KEY]))
        except (ValueError, TypeError) as exc:  # written by another galaxytune version, or edited
            raise ModelError(f"{path}: its galaxytune model description cannot be read ({exc}).") from exc

    def eval(self) -> OnnxNet:
        return self

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        images = pixels if pixels.dtype == torch.uint8 else (pixels * 255).round().clamp(0, 255).to(torch.uint8)
        logits, _ = self.session.run(None, {"images": images.contiguous().numpy()})
        return torch.from_numpy(logits)
