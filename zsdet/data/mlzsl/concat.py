"""A ``FeatureSource`` over the rows of several sources, e.g. real seen + synthesized unseen features."""
import itertools
import math
from typing import Iterator, Sequence, Tuple

import torch

from ..feature_source import FeatureSource
from ..seeded_rng import derive_seed

__all__ = ["ConcatSource"]


class ConcatSource:
    """Every row of every part once per epoch; each batch mixes the parts in proportion to their sizes.

    With ``steps = ceil(total / batch_size)``, part ``i`` is read in batches of
    ``ceil(len(part_i) / steps)`` rows (its own shuffle, seeded by ``(seed, i)``) and the i-th
    batches of all parts are concatenated, so streamed and in-memory parts mix within every batch.

    Args:
        parts: sources with equal ``feature_dim`` and ``num_classes``; empty ones are ignored.
    """

    def __init__(self, parts: Sequence[FeatureSource]):
        self.parts = [p for p in parts if len(p)]
        if not self.parts:
            raise ValueError("ConcatSource: every part is empty")
        dims = {(p.feature_dim, p.num_classes) for p in self.parts}
        if len(dims) != 1:
            raise ValueError(f"ConcatSource: parts differ in (feature_dim, num_classes): {sorted(dims)}")
        self.feature_dim, self.num_classes = dims.pop()

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def iter_batches(self, batch_size: int, epoch: int, seed: int
                     ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``(x (B, d) float32, y (B, C) float32)`` of about ``batch_size`` rows."""
        steps = math.ceil(len(self) / batch_size)
        streams = [p.iter_batches(math.ceil(len(p) / steps), epoch, derive_seed(seed, i))
                   for i, p in enumerate(self.parts)]
        for group in itertools.zip_longest(*streams):
            batches = [b for b in group if b is not None]
            yield torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
