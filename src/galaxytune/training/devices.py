"""The device policy: where this process runs the network outside Lightning's fits (features
for the transfer stage, predictions of each stage, TTA), chosen from the same settings that
Lightning trains with (``trainer.accelerator`` and ``trainer.devices``).

Under multi-process (DDP) training, process ``LOCAL_RANK`` uses the ``LOCAL_RANK``-th of the
chosen devices, as Lightning does, not every process the first GPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from galaxytune.config import TrainerConfig

CUDA_NAMES = ("gpu", "cuda")


def device_ids(devices: Any, available: int) -> list[int]:
    """The device indices ``trainer.devices`` picks of ``available`` ones, as Lightning reads it:
    'auto' or -1 all of them; a number n the first n; a list (or a string "1,3") those indices."""
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return list(range(available))
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        devices = int(text)
    if isinstance(devices, (list, tuple)):
        return [int(d) for d in devices]
    if devices == -1:
        return list(range(available))
    return list(range(min(int(devices), available)))


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def inference_device(trainer: TrainerConfig) -> torch.device:
    """The device this process trains on, as Lightning picks it from ``trainer.accelerator`` and
    ``trainer.devices``: a CUDA GPU (this process's own under DDP), Apple's MPS, or the CPU."""
    accelerator = str(trainer.accelerator).lower()
    if accelerator in (*CUDA_NAMES, "auto") and torch.cuda.is_available():
        ids = device_ids(trainer.devices, torch.cuda.device_count())
        if ids:
            return torch.device("cuda", ids[_local_rank() % len(ids)])
    if accelerator in ("mps", "auto") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def place(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` with every parameter and buffer on ``device``. Lightning's teardown moves the module
    it fitted back to the CPU: a head fitted alone would leave its backbone behind on the GPU."""
    return net.to(device)


def devices_of(net: nn.Module) -> set[torch.device]:
    """Every device that holds one of ``net``'s parameters or buffers."""
    return {t.device for t in (*net.parameters(), *net.buffers())}
