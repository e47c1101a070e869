"""Devices and data-parallel ranks of the generator's training (detectron2's ``launch``)."""
from typing import Callable, Iterator, List, Optional, Tuple

import torch
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from ..data.feature_source import FeatureSource
from .amp_linear import set_grad_mode

__all__ = ["resolve_device", "per_rank_batch", "shards_by_rank", "wrap_for_ranks", "usable_batches", "step_groups"]

Batch = Tuple[torch.Tensor, torch.Tensor]


def resolve_device(name: Optional[str]) -> torch.device:
    """``name`` if given, else this rank's GPU when CUDA is available, else the CPU."""
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", comm.get_local_rank())
    return torch.device("cpu")


def per_rank_batch(total: int) -> int:
    """Samples per rank of a step whose batch over all ranks is ``total`` (``SYNTHESIS.BATCH_SIZE``,
    detectron2's convention for ``SOLVER.IMS_PER_BATCH``): a run does the same steps with the same
    effective batch on any number of ranks (DDP averages the ranks' gradients).

    Raises:
        ValueError: ``total`` not divisible by the number of ranks (key and value named).
    """
    world = comm.get_world_size()
    if total % world:
        raise ValueError(f"SYNTHESIS.BATCH_SIZE is the batch over all {world} processes and must be divisible "
                         f"by their number, got {total}")
    return total // world


def shards_by_rank(source: FeatureSource) -> bool:
    """Whether training reads ``source.iter_rank_batches`` (several ranks and the source has it: each
    rank reads a disjoint share of every pass, equally many samples, all usable) instead of every
    rank reading the whole ``iter_batches`` stream and keeping its share of the batches."""
    return comm.get_world_size() > 1 and hasattr(source, "iter_rank_batches")


def wrap_for_ranks(module: Optional[torch.nn.Module], device: torch.device) -> Optional[torch.nn.Module]:
    """``module`` in ``DistributedDataParallel`` when several ranks run (its ``AmpLinear`` layers
    then take their gradients from autograd hooks, which DDP reduces); else ``module`` itself."""
    if module is None or comm.get_world_size() == 1:
        return module
    set_grad_mode(module, "autograd")
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def usable_batches(train: FeatureSource, epoch: int, settings, usable: Callable[..., Optional[Batch]]
                   ) -> Iterator[Batch]:
    """Batches of exactly ``per_rank_batch(BATCH_SIZE)`` usable samples (CPU) from the epoch's
    ``CRITIC_ITERS`` passes: a step's batch over all ranks is ``BATCH_SIZE``.

    ``usable(x, y)`` keeps a batch's usable samples (or returns None); the dropped ones are refilled
    from the following samples, so the matrix products keep their shapes from batch to batch (on
    the CPU oneDNN compiles a kernel for every new shape); an incomplete last batch is dropped.
    Every rank reads the same stream, unless the source shards itself (:func:`shards_by_rank`):
    then each rank reads only its own share.
    """
    k, bs = settings.critic_iters, per_rank_batch(settings.batch_size)
    xs, ys, n = [], [], 0
    for j in range(k):
        passes = (train.iter_rank_batches(bs, epoch * k + j, settings.seed, comm.get_rank(), comm.get_world_size())
                  if shards_by_rank(train) else train.iter_batches(bs, epoch * k + j, settings.seed))
        for batch in passes:
            batch = usable(*batch)
            if batch is None:
                continue
            xs.append(batch[0])
            ys.append(batch[1])
            n += len(batch[0])
            while n >= bs:
                x, y = (xs[0], ys[0]) if len(xs) == 1 else (torch.cat(xs), torch.cat(ys))
                yield x[:bs], y[:bs]
                n -= bs
                xs, ys = ([x[bs:]], [y[bs:]]) if n else ([], [])  # no empty piece: no copy when all usable


def step_groups(train: FeatureSource, epoch: int, settings, usable: Callable[..., Optional[Batch]]
                ) -> Iterator[List[Batch]]:
    """This rank's groups of ``CRITIC_ITERS`` full batches of usable samples (:func:`usable_batches`),
    one group per generator step; every rank gets the same number of groups (DDP needs equal step
    counts)."""
    k, world, rank = settings.critic_iters, comm.get_world_size(), comm.get_rank()
    if shards_by_rank(train):  # this rank's own stream: all of its batches are its share
        world, rank = 1, 0
    chunk = []
    for batch in usable_batches(train, epoch, settings, usable):
        chunk.append(batch)
        if len(chunk) == k * world:
            yield chunk[rank * k:(rank + 1) * k]
            chunk = []
