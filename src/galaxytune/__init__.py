"""galaxytune: finetune pretrained timm backbones on galaxy images, honestly evaluated."""

from galaxytune.api import load, train
from galaxytune.config import Config, load_config

__all__ = ["Config", "load", "load_config", "train"]
__version__ = "0.1.0"
