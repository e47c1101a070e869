"""Devices and data-parallel ranks of the generator's training (detectron2's ``launch``)."""
from typing import Optional

import torch
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

from ..data.feature_source import FeatureSource
from .amp_linear import set_grad_mode

__all__ = ["resolve_device", "per_rank_batch", "shards_by_rank", "wrap_for_ranks"]


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
