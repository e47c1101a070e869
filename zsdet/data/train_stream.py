"""The detector's training batches as a pure function of (seed, iteration), so that a resumed run
reads exactly the batches, with exactly the augmentations, that an uninterrupted run would.

* Stream position ``p = 0, 1, 2, ...`` (over all ranks) -> dataset index: epoch ``p // n`` is a
  permutation of the ``n`` images seeded by ``derive_seed(seed, TRAIN_ORDER, epoch)``.
* Item ``p`` is mapped (augmented) with the global generators seeded by
  ``derive_seed(seed, TRAIN_AUGMENT, p)``, whichever process or dataloader worker maps it.
* Rank ``r`` of ``W`` reads positions ``r, r + W, ...`` (as detectron2's ``TrainingSampler``).
  With aspect-ratio grouping, where iteration ``k`` starts and which items wait in the other
  orientation's bucket are recomputed from the images' width / height, so the resumed stream
  regroups identically.
"""
import itertools
from typing import List, Tuple

import numpy as np
import torch
from detectron2.data import DatasetFromList
from detectron2.data.build import build_batch_data_loader
from detectron2.utils import comm
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from .seeded_rng import TRAIN_AUGMENT, TRAIN_LOADER, TRAIN_ORDER, derive_seed, seeded_global_rngs


class StreamOrder:
    """Dataset index of each stream position; each epoch is an independently seeded permutation."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self._epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, TRAIN_ORDER, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=g).numpy()
        return self._perm

    def indices(self, positions: np.ndarray) -> np.ndarray:
        """Dataset indices (len(positions),) of the given stream positions."""
        epochs, offsets = np.divmod(np.asarray(positions, dtype=np.int64), self.size)
        out = np.empty(len(offsets), dtype=np.int64)
        for epoch in np.unique(epochs):  # a few epochs per call
            at = epochs == epoch
            out[at] = self.permutation(int(epoch))[offsets[at]]
        return out


class StreamDataset(Dataset):
    """``dataset[p]``: the mapped dataset dict at stream position ``p`` (module docstring)."""

    def __init__(self, dicts: List[dict], mapper, seed: int):
        self.dicts = DatasetFromList(dicts, copy=False)  # serialized: cheap to share with workers
        self.mapper = mapper
        self.seed = seed
        self.order = StreamOrder(len(dicts), seed)

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, position: int) -> dict:
        index = int(self.order.indices([position])[0])
        with seeded_global_rngs(derive_seed(self.seed, TRAIN_AUGMENT, int(position))):
            return self.mapper(self.dicts[index])


class _RankStream(IterableDataset):
    """Mapped items at ``pending`` positions, then at this rank's positions from its ``first``-th
    item on. Dataloader worker ``w`` of ``n`` maps items ``w, w + n, ...``, and the DataLoader
    reads its workers in turn, so items arrive in stream order with any number of workers (on
    detectron2 v0.6 and main alike)."""

    def __init__(self, dataset: StreamDataset, pending: List[int], first: int, rank: int, world_size: int):
        self.dataset, self.pending, self.first, self.rank, self.world_size = dataset, pending, first, rank, world_size

    def __iter__(self):
        worker = get_worker_info()
        positions = itertools.chain(self.pending, itertools.count(self.rank + self.first * self.world_size,
                                                                  self.world_size))
        for position in itertools.islice(positions, worker.id if worker else 0, None,
                                         worker.num_workers if worker else 1):
            yield self.dataset[position]


class TrainStream:
    """Iterable over this rank's training batches (lists of mapped dicts), starting at ``start_iter``.

    Set ``start_iter`` (e.g. after resuming) before iterating; the loader is built lazily.

    Args:
        dicts: the training set (detectron2 dataset dicts with ``width`` / ``height``).
        mapper: callable dict -> mapped dict (``DatasetMapper(cfg, is_train=True)``).
        seed: the run's seed (``cfg.SEED``, >= 0).
        total_batch_size: images per iteration over all ranks (``SOLVER.IMS_PER_BATCH``).
        aspect_ratio_grouping, num_workers: as in ``build_detection_train_loader``.
    """

    def __init__(self, dicts: List[dict], mapper, seed: int, total_batch_size: int, *,
                 aspect_ratio_grouping: bool = True, num_workers: int = 0):
        self.dataset = StreamDataset(dicts, mapper, seed)
        self.seed = seed
        self.total_batch_size = total_batch_size
        self.batch_size = total_batch_size // comm.get_world_size()
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self.num_workers = num_workers
        self.wide = np.array([d["width"] > d["height"] for d in dicts])
        self.start_iter = 0

    def resume_point(self, start_iter: int) -> Tuple[List[int], int]:
        """(positions waiting in a bucket, index of this rank's first unread item) at ``start_iter``."""
        bs, rank, world = self.batch_size, comm.get_rank(), comm.get_world_size()
        if start_iter == 0 or not self.aspect_ratio_grouping or self.wide.all() or not self.wide.any():
            return [], start_iter * bs  # batches are runs of consecutive items
        n = 2 * bs * (start_iter + 1)
        while True:  # simulate detectron2's AspectRatioGroupedDataset on the orientations alone
            positions = rank + np.arange(n) * world
            wide = self.wide[self.dataset.order.indices(positions)]
            in_bucket = np.where(wide, np.cumsum(wide), np.cumsum(~wide))  # 1-based rank in its bucket
            batches = np.cumsum(in_bucket % bs == 0)  # batches complete after each item
            if batches[-1] >= start_iter:
                break
            n *= 2
        last = int(np.searchsorted(batches, start_iter))  # the item completing batch start_iter - 1
        other = np.nonzero(wide[: last + 1] != wide[last])[0]
        waiting = other[len(other) - len(other) % bs:]
        return positions[waiting].tolist(), last + 1

    def __iter__(self):
        pending, first = self.resume_point(self.start_iter)
        items = _RankStream(self.dataset, pending, first, comm.get_rank(), comm.get_world_size())
        batches = iter(build_batch_data_loader(items, None, self.total_batch_size,
                                               aspect_ratio_grouping=self.aspect_ratio_grouping,
                                               num_workers=self.num_workers))
        # torch's DataLoader draws its workers' base seed from the global generator when its
        # iterator starts (first batch): keep that draw out of the training step's random state
        with seeded_global_rngs(derive_seed(self.seed, TRAIN_LOADER, self.start_iter)):
            first_batch = next(batches)
        yield first_batch
        yield from batches
