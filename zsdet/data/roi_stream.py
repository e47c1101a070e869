"""Streamed generator training data from an RoI feature bank: single-label RoIs plus mixtures.

:class:`RoIBankSource` is the ``FeatureSource`` of the generator stage and of its validation
split. Its rows (foreground RoIs of some images) are cut into read *blocks*
(:meth:`FeatureBank.blocks`, like :class:`~zsdet.data.mlzsl.H5FeatureSource`'s blocks). A *pass*
(one ``epoch`` argument of ``iter_batches``) is a pure function of ``(seed, pass)``:

1. choose the pass's rows: all rows; or ``samples_per_epoch`` of them as whole blocks in a random
   block order (the last one cut); or, ``class_balanced``, up to the same random number of rows of
   every class (the largest cap that keeps the total within ``samples_per_epoch``);
2. deal the blocks in a random order to the data-parallel ranks as contiguous runs of exactly
   ``rows // world`` rows (a block at a boundary is split: all ranks together train on the rows of
   the one-process pass), and cut each rank's run into *groups* of at most ``memory_budget_mb`` of
   float32 rows;
3. per group: read its blocks (one contiguous HDF5 read each), draw ``mixture_ratio`` mixtures per
   row (paper Sec. 5, :func:`~zsdet.data.mixtures.sample_mixture_sets`) among the group's rows,
   shuffle singles and mixtures together and yield batches; a mixture is fused
   (:func:`~zsdet.data.mixtures.fuse_mixtures`) only when its batch is built.

Memory: one group buffer (the budget), one block of float16 and one batch, whatever the bank's
size; the in-memory index is a few int arrays over the source's rows (about 20 bytes a row).
"""
import copy
from typing import Iterator, Tuple

import numpy as np
import torch

from .feature_bank import FeatureBank
from .mixtures import fuse_mixtures, sample_mixture_sets
from .row_sampling import balanced_rows, class_cap
from .seeded_rng import derive_seed

__all__ = ["RoIBankSource", "shard_blocks"]


def shard_blocks(sizes: np.ndarray, rank: int, world: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This rank's share of an ordered list of blocks of ``sizes`` rows: rows ``[rank * keep,
    (rank + 1) * keep)`` of their concatenation, ``keep = sum(sizes) // world`` (equal shares, whose
    sum is the one-process pass but for the last ``sum % world`` rows; a block at a boundary is
    split). Returns (indices into the list, first and end row taken in each of those blocks)."""
    keep = int(sizes.sum()) // world
    ends = np.cumsum(sizes)
    begins = ends - sizes
    lo, hi = rank * keep, (rank + 1) * keep
    mine = np.nonzero((ends > lo) & (begins < hi))[0]
    return mine, np.maximum(lo - begins[mine], 0), np.minimum(hi - begins[mine], sizes[mine])


class RoIBankSource:
    """A ``FeatureSource`` streaming foreground rows of a :class:`FeatureBank` (module docstring).

    Args:
        bank: the bank; rows: (n,) global foreground rows of it.
        mixture_ratio: mixtures per single row of a pass (0: singles only);
        min_set_size, max_set_size: RoIs fused per mixture.
        memory_budget_mb: float32 rows held at once (a group).
        block_rows: rows per read block (also the granularity of a ``samples_per_epoch`` pass).
        samples_per_epoch: single rows per pass (0: all rows).
        class_balanced: draw a pass's rows with a per-class cap instead of as whole blocks.

    ``iter_batches(batch_size, epoch, seed)`` yields ``(x (B, d) float32, y (B, C) float32 multi-hot)``;
    ``iter_rank_batches(batch_size, epoch, seed, rank, world)`` this rank's disjoint share of a pass
    (the same number of samples on every rank; ``iter_batches`` is rank 0 of 1).
    """

    def __init__(self, bank: FeatureBank, rows: np.ndarray, *, mixture_ratio: float = 0.5, min_set_size: int = 2,
                 max_set_size: int = 3, memory_budget_mb: float = 256.0, block_rows: int = 256,
                 samples_per_epoch: int = 0, class_balanced: bool = False):
        self.bank = bank
        self.rows = np.sort(np.asarray(rows, dtype=np.int64))
        self.labels = bank.labels[self.rows]
        if len(self.rows) == 0:
            raise ValueError(f"RoI bank {bank.bank_dir}: no foreground row to train the generator on")
        if int(self.labels.max()) >= bank.num_classes:
            raise ValueError(f"RoI bank {bank.bank_dir}: the generator's rows must be foreground RoIs")
        self.num_classes, self.feature_dim = bank.num_classes, bank.feature_dim
        self.mixture_ratio, self.set_sizes = float(mixture_ratio), (min_set_size, max_set_size)
        sample_mixture_sets(1, 0, min_set_size, max_set_size, np.random.default_rng(0))  # validates the sizes
        if memory_budget_mb <= 0 or block_rows < 1 or samples_per_epoch < 0:
            raise ValueError(f"need memory_budget_mb > 0, block_rows >= 1, samples_per_epoch >= 0; got "
                             f"{memory_budget_mb}, {block_rows}, {samples_per_epoch}")
        self.group_rows = int(memory_budget_mb * 2 ** 20) // (4 * self.feature_dim + 8)
        if self.group_rows < block_rows:
            raise ValueError(f"memory budget {memory_budget_mb} MiB holds {self.group_rows} rows of "
                             f"d={self.feature_dim}, fewer than one block of {block_rows}")
        self.block_rows = block_rows
        self.bounds = bank.blocks(self.rows, block_rows)
        self.block_of = np.repeat(np.arange(len(self.bounds) - 1, dtype=np.int32), np.diff(self.bounds))
        self.samples_per_epoch, self.class_balanced = int(samples_per_epoch), bool(class_balanced)
        counts = np.bincount(self.labels, minlength=self.num_classes)
        per_pass = len(self.rows) if not self.samples_per_epoch else min(self.samples_per_epoch, len(self.rows))
        if self.class_balanced and self.samples_per_epoch:
            per_pass = int(np.minimum(counts, class_cap(counts, per_pass)).sum())
        self.singles_per_pass = per_pass

    def __len__(self) -> int:
        return self.singles_per_pass + int(self.mixture_ratio * self.singles_per_pass)

    # ---------------------------------------------------------------- one pass
    def _choose(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """(positions into ``self.rows`` of the pass's rows (sorted), block order)."""
        n, order = len(self.rows), rng.permutation(len(self.bounds) - 1)
        if self.samples_per_epoch == 0 or self.samples_per_epoch >= n and not self.class_balanced:
            return np.arange(n), order
        if self.class_balanced:
            counts = np.bincount(self.labels, minlength=self.num_classes)
            return balanced_rows(self.labels, class_cap(counts, self.samples_per_epoch), rng), order
        sizes = np.diff(self.bounds)[order]
        take = np.clip(self.samples_per_epoch - (np.cumsum(sizes) - sizes), 0, sizes)  # whole blocks, last cut
        per_block = np.zeros(len(order), np.int64)
        per_block[order] = take
        offset = np.arange(n) - self.bounds[self.block_of]
        return np.nonzero(offset < per_block[self.block_of])[0], order

    def iter_rank_batches(self, batch_size: int, epoch: int, seed: int, rank: int, world: int
                          ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of pass ``epoch``; only the last one may be short."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        chosen, order = self._choose(np.random.default_rng(derive_seed(seed, epoch)))
        rng = np.random.default_rng(derive_seed(seed, epoch, rank, world))
        starts = np.searchsorted(chosen, self.bounds)  # block b's chosen rows: chosen[starts[b]:starts[b+1]]
        sizes = np.diff(starts)
        order = order[sizes[order] > 0]
        mine, first, end = shard_blocks(sizes[order], rank, world)
        mine = order[mine]
        group_of = (np.cumsum(end - first) - (end - first)) // self.group_rows
        x = torch.empty(self.group_rows + self.block_rows, self.feature_dim)
        lab = torch.empty(len(x), dtype=torch.int64)
        carry, done = None, 0
        with self.bank.reader() as read:
            for g in range(int(group_of[-1]) + 1 if len(mine) else 0):
                m = 0
                in_group = np.nonzero(group_of == g)[0]
                for i in in_group[np.argsort(mine[in_group])]:  # file order within a group
                    pos = chosen[starts[mine[i]] + first[i]:starts[mine[i]] + end[i]]
                    x[m:m + len(pos)] = torch.from_numpy(read(self.rows[pos]))
                    lab[m:m + len(pos)] = torch.from_numpy(self.labels[pos].astype(np.int64))
                    m += len(pos)
                num_mix = int(self.mixture_ratio * (done + m)) - int(self.mixture_ratio * done)
                done += m
                idx, mask = sample_mixture_sets(max(m, 1), num_mix, *self.set_sizes, rng)
                mix = (torch.from_numpy(idx), torch.from_numpy(mask))
                perm = rng.permutation(m + num_mix)
                start = 0
                if carry is not None:
                    piece = self._assemble(x, lab, m, mix, perm[:batch_size - len(carry[0])])
                    carry, start = (torch.cat([carry[0], piece[0]]), torch.cat([carry[1], piece[1]])), len(piece[0])
                    if len(carry[0]) < batch_size:
                        continue
                    yield carry
                    carry = None
                for s in range(start, len(perm), batch_size):
                    piece = self._assemble(x, lab, m, mix, perm[s:s + batch_size])
                    if len(piece[0]) == batch_size:
                        yield piece
                    else:
                        carry = piece
        if carry is not None:
            yield carry

    def iter_batches(self, batch_size: int, epoch: int, seed: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """All batches of pass ``epoch`` (one process)."""
        return self.iter_rank_batches(batch_size, epoch, seed, 0, 1)

    def iter_every_sample(self, batch_size: int, seed: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Pass 0 as it would be with ``samples_per_epoch`` 0: every row once, with its mixtures,
        streamed in groups as any pass (the trainer's statistics: feature range, label sets)."""
        whole = copy.copy(self)
        whole.samples_per_epoch, whole.class_balanced, whole.singles_per_pass = 0, False, len(self.rows)
        return whole.iter_batches(batch_size, 0, seed)

    def _assemble(self, x: torch.Tensor, lab: torch.Tensor, m: int, mix, slots: np.ndarray
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Batch of group slots: slot < m is single row ``slot``, else mixture ``slot - m``."""
        slots = torch.from_numpy(slots)
        single = slots < m
        xb = torch.empty(len(slots), self.feature_dim)
        yb = torch.zeros(len(slots), self.num_classes)
        rows = slots[single]
        xb[single] = x[rows]
        yb[single.nonzero()[:, 0], lab[rows]] = 1
        if not bool(single.all()):
            j = slots[~single] - m
            xb[~single], yb[~single] = fuse_mixtures(x, lab, mix[0][j], mix[1][j], self.num_classes)
        return xb, yb
