"""How the items of a split are dealt to the processes of a multi-process (DDP) run, for training,
validation and prediction alike.

The items of an epoch are put in one order (a shuffle shared by every process, or the split's
own order), and dealt in turn: process ``r`` of ``w`` takes positions
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

from galaxytune.training.processes import world


def shuffled(n: int) -> list[int]:
    """A new order of ``n`` items, drawn as PyTorch's ``RandomSampler`` draws it: a seed from the
    global random stream, so a single process shuffles exactly as a plain shuffling DataLoader
    (and a resumed fit, which restores that stream, as the uninterrupted one). Under DDP every
    process takes process 0's seed, so all deal from one order however their streams drifted."""
    seed = int(torch.empty((), dtype=torch.int64).random_().item())
    if world()[1] > 1:
        shared = [seed]
        dist.broadcast_object_list(shared, src=0)
        seed = shared[0]
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


class Shard(Sampler[int]):
    """This process's share of ``n`` items (see the module's docstring): with ``shuffle`` a new
    order every epoch (:func:`shuffled`) and equal shares; else the items in order, dealt unpadded."""

    def __init__(self, n: int, shuffle: bool):
        self.n, self.shuffle = n, shuffle

    def _positions(self) -> range:
        rank, size = world()
        end = self.n - self.n % size if self.shuffle else self.n
        return range(rank, end, size)

    def __iter__(self) -> Iterator[int]:
        positions = self._positions()
        if not self.shuffle:
            return iter(positions)
        return iter(shuffled(self.n)[positions.start:positions.stop:positions.step])

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
