"""Static int8 quantization of an exported model (``galaxytune export --int8``).

ONNX Runtime's static quantization (QDQ format, weights per channel as int8, activations as
uint8, the pairing its x86 kernels are fastest with) is calibrated on the validation images of
the model's run (``splits.csv``), decoded exactly as ``galaxytune predict`` decodes. Half of
those images calibrate; the other half is held back, and on it the int8 model is scored
against the labels and against the fp32 model, so that the report at export is not read off
the images that set the quantization ranges. The report travels in the file's metadata.

The graph is pre-processed first (shape inference, batch norms folded into the convolutions),
as ONNX Runtime advises. For a model with TTA inside its graph (``decision.tta``) the folding
gives each of the 8 views its own copy of the weights, so its int8 file is larger than the fp32
one (about 8 x 1/4); a model without TTA gets a file about 1/4 of fp32.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from galaxytune.errors import ModelError
from galaxytune.files import atomic_path
from galaxytune.inference.onnx import INFO_KEY, OnnxNet
from galaxytune.run_folder import RunFolder

REPORT_KEY = "galaxytune_int8_report"


@dataclass
class Int8Report:
    path: str
    calibration_images: int
    held_back_images: int
    fp32_accuracy: float | None
    int8_accuracy: float | None
    agreement: float
    """Share of held-back images on which int8 and fp32 predict the same class."""
    max_probability_difference: float

    def lines(self) -> list[str]:
        acc = ("" if self.fp32_accuracy is None else
               f"accuracy fp32 {self.fp32_accuracy:.4f}, int8 {self.int8_accuracy:.4f}; ")
        return [f"Wrote {self.path} (int8, calibrated on {self.calibration_images} validation image(s)).",
                f"On {self.held_back_images} held-back validation image(s): {acc}"
                f"int8 agrees with fp32 on {self.agreement:.4f} of them "
                f"(largest probability difference {self.max_probability_difference:.3f})."]


def validation_rows(run_dir: str | Path) -> list[dict]:
    """The validation rows (path, label, split) of the run's ``splits.csv``, at least 2."""
    splits = RunFolder(run_dir).splits
    if not splits.is_file():
        raise ModelError(f"{run_dir} has no {splits.name}: --int8 calibrates on the validation images of the "
                         "run that trained the model. Pass the run folder `galaxytune train --out` wrote.")
    with open(splits, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("split") == "val"]
    if len(rows) < 2:
        raise ModelError(f"{splits} lists {len(rows)} validation image(s); --int8 needs at least 2 "
                         "(half to calibrate, half to check).")
    return rows


def decode_rows(rows: list[dict], fp32: OnnxNet, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The images of ``splits.csv`` rows as (n, 3, S, S) uint8, decoded as predict decodes them,
    and their class indices (-1 for a label the model does not know); unreadable ones left out."""
    from galaxytune.data.images import iter_decoded

    info, index = fp32.info, {c: i for i, c in enumerate(fp32.info.classes)}
    size = info.image_size
    chunks, labels = [np.zeros((0, 3, size, size), np.uint8)], []
    for idx, pixels, _, _ in iter_decoded([Path(r["path"]) for r in rows], size, info.center_crop, workers, 64,
                                          "calibration", info.fits_config):
        if len(idx):
            chunks.append(pixels.numpy())
            labels += [index.get(rows[i]["label"], -1) for i in idx]
    return np.concatenate(chunks), np.array(labels, dtype=int)


class _Reader:
    """ONNX Runtime's CalibrationDataReader over uint8 image batches."""

    def __init__(self, images: np.ndarray, batch_size: int = 32):
        self.batches = iter([images[i:i + batch_size] for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {"images": batch}


def _probabilities(session, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([session.run(None, {"images": images[i:i + batch_size]})[1]
                           for i in range(0, len(images), batch_size)])


def export_int8(run_dir: str | Path, fp32_path: str | Path, out: str | Path | None = None,
                calibration: int = 512, held_back: int = 4096, workers: int = 0) -> Int8Report:
    """Quantize the exported fp32 model ``fp32_path`` of run ``run_dir`` to int8 (default: beside
    it as ``<name>.int8.onnx``), calibrated on at most ``calibration`` validation images and
    checked on at most ``held_back`` others."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    CalibrationDataReader.register(_Reader)
    fp32_path = Path(fp32_path)
    out = Path(out) if out else fp32_path.with_name(fp32_path.name.removesuffix(".onnx") + ".int8.onnx")
    fp32 = OnnxNet(fp32_path)
    rows = validation_rows(run_dir)
    # Every other image calibrates, the others are held back to check; only those are decoded.
    calib, _ = decode_rows(rows[0::2][:calibration], fp32, workers)
    held, held_labels = decode_rows(rows[1::2][:held_back], fp32, workers)
    if not len(calib) or not len(held):
        raise ModelError(f"Too few of the validation images in {RunFolder(run_dir).splits} could be read to "
                         "calibrate and check an int8 model.")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:  # shape inference and graph fusions, as ONNX Runtime recommends before quantizing
            quant_pre_process(str(fp32_path), str(prepared))
        except Exception as exc:  # an optional step (onnx shape inference, fusions): skip it, say why
            logging.getLogger(__name__).info("quantization pre-processing skipped: %s: %s", type(exc).__name__, exc)
            prepared = fp32_path
        with atomic_path(out) as target:
            try:
                quantize_static(
                    str(prepared), str(target), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                )
            except Exception as exc:  # onnx, its checker and ONNX Runtime raise many kinds: name which
                raise ModelError(f"{fp32.info.architecture} could not be quantized to int8: "
                                 f"{type(exc).__name__}: {str(exc)[:300]}") from exc
            session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
            p32, p8 = _probabilities(fp32.session, held), _probabilities(session, held)
            known = held_labels >= 0
            report = Int8Report(
                str(out), len(calib), len(held),
                float((p32.argmax(1) == held_labels)[known].mean()) if known.any() else None,
                float((p8.argmax(1) == held_labels)[known].mean()) if known.any() else None,
                float((p32.argmax(1) == p8.argmax(1)).mean()), float(np.abs(p32 - p8).max()),
            )
            model = onnx.load(str(target))
            meta = {p.key: p.value for p in model.metadata_props}
            meta[INFO_KEY] = json.dumps(asdict(fp32.info))
            meta[REPORT_KEY] = json.dumps(asdict(report) | {"calibration": "every other validation image"})
            del model.metadata_props[:]
            for key, value in meta.items():
                model.metadata_props.add(key=key, value=value)
            onnx.save(model, str(target))
    return report
