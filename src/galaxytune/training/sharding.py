"""How the items of a split are dealt to the processes of a multi-process (DDP) run, for training,
validation and prediction alike.

The items of an epoch are put in one order (a permutation drawn from the seed and the epoch
alone, or the split's own order), and dealt in turn: process ``r`` of ``w`` takes positions
``r, r + w, r + 2w, ...``. So the ``k``-th batches of B items of the ``w`` processes together hold
exactly the ``k``-th batch of ``w * B`` items of a single process: with a mean loss, DDP's
average of the processes' gradients is the single process's gradient of that big batch.

* Training (``shuffle``): every process takes the same number of items (the ``n mod w`` items left
  at the end of an epoch's order are left out, as a last partial batch is), so that no process
  waits for a gradient step the others never take.
* Validation and prediction: nothing is left out and nothing is repeated (no padding to equal
  counts, unlike PyTorch's DistributedSampler), so metrics summed over the processes count every
  image exactly once.

Lightning's own sampler replacement is off (``use_distributed_sampler=False`` in
:mod:`galaxytune.training.fit`): these samplers read the process group when iterated, so a
loader made before Lightning starts the processes shards itself once the group exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler, Subset


def world() -> tuple[int, int]:
    """(rank, number of processes) of the process group; (0, 1) where there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of ``n`` items in ``epoch``: the same in every process."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))


class Shard(Sampler[int]):
    """This process's share of ``n`` items (see the module's docstring): with ``shuffle`` a new
    order every epoch (Lightning calls :meth:`set_epoch`) and equal shares; else the items in
    order, dealt unpadded. Independent of the global RNG, so a resumed fit sees the same orders."""

    def __init__(self, n: int, shuffle: bool, seed: int = 0):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _positions(self) -> range:
        rank, size = world()
        end = self.n - self.n % size if self.shuffle else self.n
        return range(rank, end, size)

    def __iter__(self) -> Iterator[int]:
        positions = self._positions()
        if not self.shuffle:
            return iter(positions)
        order = epoch_order(self.n, self.seed, self.epoch)
        return iter(order[positions.start:positions.stop:positions.step].tolist())

    def __len__(self) -> int:
        return len(self._positions())


def gather_dealt(part: torch.Tensor, n: int) -> torch.Tensor:
    """The rows of all processes' :class:`Shard` (unshuffled) shares of ``n`` items, each
    process's ``part``, put back in the items' order, in every process."""
    rank, size = world()
    if size == 1:
        return part
    rows = -(-n // size)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else part.device
    padded = torch.zeros((rows, *part.shape[1:]), dtype=part.dtype, device=device)
    padded[: len(part)] = part.to(device)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    out = torch.empty((n, *part.shape[1:]), dtype=part.dtype)
    for r, p in enumerate(parts):
        count = len(range(r, n, size))
        out[r::size] = p[:count].cpu()
    return out


def sharded(compute: Callable[[Dataset], torch.Tensor], data: Dataset) -> torch.Tensor:
    """``compute(data)`` (rows in ``data``'s order), each item computed by one process only under
    DDP: every process computes its share and the shares are gathered into every process."""
    rank, size = world()
    n = len(data)
    if size == 1 or n < size:  # a process with no items would have no rows to send
        return compute(data)
    return gather_dealt(compute(Subset(data, list(range(rank, n, size)))), n)
