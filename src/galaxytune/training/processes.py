"""The processes of a multi-process (DDP) run: which one this is, starting them, and ordering them.

A run with several processes (``trainer.devices`` > 1 or ``trainer.num_nodes`` > 1 under a DDP
strategy) starts them and their process group when the run starts, through Lightning (Fabric's
launcher: it starts the other processes of this machine, re-running the same command, or joins
those that torchrun or SLURM started). So every stage, from the data and the stage-1 features
on, can share its work among the processes; Lightning's fits later find the group and use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch.distributed as dist
from lightning.fabric import Fabric
from lightning.fabric.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from galaxytune.config import TrainerConfig

WAIT_FOR_MAIN = timedelta(days=2)
"""How long the other processes wait for the main one to prepare the data (decoding a survey's
images the first time can take hours; the group's default timeout is 30 minutes)."""


def world() -> tuple[int, int]:
    """(rank, number of processes) of the process group; (0, 1) where there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Global rank 0, known from the environment even before the process group exists. Lightning's
    launcher sets LOCAL_RANK for the processes it starts; every node of a multi-node run is started
    with NODE_RANK (or RANK)."""
    for name in ("RANK", "SLURM_PROCID"):
        if name in os.environ:
            return int(os.environ[name]) == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


def start_processes(trainer: TrainerConfig) -> None:
    """Start the run's other processes and join the process group, where the settings ask for more
    than one process and no group exists yet; nothing otherwise."""
    if world()[1] > 1:
        return
    # Lightning reads the settings as its Trainer will (e.g. devices 'auto' on a machine with GPUs).
    fabric = Fabric(accelerator=trainer.accelerator, devices=trainer.devices, strategy=trainer.strategy,
                    num_nodes=trainer.num_nodes)
    # Spawning strategies (ddp_spawn, ...) run a function in new processes, not the whole run:
    # they are left to Lightning's fits, as before.
    if fabric.world_size > 1 and isinstance(fabric.strategy.launcher, _SubprocessScriptLauncher):
        fabric.launch()


@contextmanager
def main_process_first() -> Iterator[None]:
    """The main process runs the block first (e.g. decoding images into the disk cache); the others
    wait, then run it (and find the cache full)."""
    rank, size = world()
    if size == 1:
        yield
        return
    group = dist.new_group(backend="gloo", timeout=WAIT_FOR_MAIN)  # a CPU-side barrier, also under NCCL
    if rank != 0:
        dist.barrier(group=group)
    yield
    if rank == 0:
        dist.barrier(group=group)
    dist.destroy_process_group(group)
