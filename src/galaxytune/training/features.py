"""The frozen backbone's pooled features of a split (the transfer stage's inputs), kept in the
disk cache where an earlier run on the same images and weights left them. Under DDP each image's
features are computed by one process and gathered into all."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from galaxytune.cache import key_of, load_arrays, save_arrays
from galaxytune.config import Config
from galaxytune.data.prepare import Prepared, disk_cache_folder
from galaxytune.inference.predict import run_batches
from galaxytune.models.backbone import GalaxyClassifier, weights_identity
from galaxytune.training.processes import is_main_process, world
from galaxytune.training.sharding import sharded


class Features(nn.Module):
    """The pooled backbone features of a classifier, as a module for :func:`run_batches`."""

    def __init__(self, net: GalaxyClassifier):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.features(x)


def split_features(cfg: Config, net: GalaxyClassifier, data: Prepared, split: str, workers: int) -> torch.Tensor:
    """The frozen backbone's pooled features of one split, from the disk cache where an earlier
    run on the same images and weights left them."""
    dataset = data.sets[split]
    folder = disk_cache_folder(cfg.data)
    m = cfg.model
    cacheable = folder is not None and data.cache_key is not None and m.weights != "none"  # random init: seeded
    if cacheable:
        key = key_of("features", data.cache_key, split, [str(p) for p in dataset.paths], m.name,
                     weights_identity(m.name, m.weights), m.kwargs,
                     net.mean.flatten().tolist(), net.std.flatten().tolist(), net.stretch, net.softening)
        entry = load_arrays(folder, "features", key)
        if _everyone(entry is not None):
            return torch.from_numpy(entry["features"])
    out = sharded(lambda part: run_batches(Features(net), part, f"features {split}", workers), dataset)
    if cacheable and is_main_process():
        save_arrays(folder, "features", key, {"features": out.numpy()})
    return out


def _everyone(found: bool) -> bool:
    """Whether every process found its entry: the processes compute together or not at all (one
    that missed the cache, e.g. on another node's disk, must not wait alone for the others)."""
    size = world()[1]
    if size == 1:
        return found
    everyone = [found] * size
    dist.all_gather_object(everyone, found)  # an object collective: any backend, NCCL included
    return all(everyone)
