"""galaxytune: finetune pretrained timm backbones on galaxy images, honestly evaluated."""

from __future__ import annotations

import importlib

__all__ = ["Config", "load", "load_config", "train"]
__version__ = "0.1.0"

# Imported on first use: the command line and the report need not pay for torch up front.
_LAZY = {"load": "galaxytune.api", "train": "galaxytune.api", "Config": "galaxytune.config",
         "load_config": "galaxytune.config"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'galaxytune' has no attribute {name!r}")
