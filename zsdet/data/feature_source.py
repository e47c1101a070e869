"""Where the generator's training features come from: the :class:`FeatureSource` protocol, an
in-memory source and :func:`check_finite`.

A source yields ``(x (B, d) float32, y (B, C) float32 multi-hot)`` batches on the CPU. The order is
a pure function of ``(epoch, seed)`` so that a resumed run sees exactly the batches an
uninterrupted one would. Large sources stream (HDF5 shards, RoI banks); the trainer never asks
for all features at once.

Optional method ``split(fraction, seed) -> (train_source, val_source)``: lets
:meth:`zsdet.synthesis.SynthesisTrainer.fit` carve its validation split itself when no ``val``
source is given. Optional method ``iter_every_sample(batch_size, seed)``: one pass over every
sample, for a source whose passes hold only some of them (:func:`every_sample`).
"""
from typing import Iterator, Protocol, Tuple, runtime_checkable

import torch

from .seeded_rng import SPLIT_KEY, derive_seed

__all__ = ["FeatureSource", "TensorFeatureSource", "check_finite", "every_sample"]


@runtime_checkable
class FeatureSource(Protocol):
    """Protocol of feature sources (see module docstring)."""

    feature_dim: int
    num_classes: int

    def __len__(self) -> int: ...

    def iter_batches(self, batch_size: int, epoch: int, seed: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``(x (B, d) float32, y (B, C) float32)``, last one possibly smaller; deterministic."""
        ...


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` and the first bad row when ``x`` holds NaN or inf."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"{what}: non-finite (NaN/inf) value in row {row}")


def every_sample(source: FeatureSource, batch_size: int, seed: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Batches of one pass over every sample of ``source`` (statistics such as the feature range and
    the label sets): ``source.iter_every_sample`` when it has one, else pass 0 of ``iter_batches``."""
    if hasattr(source, "iter_every_sample"):
        return source.iter_every_sample(batch_size, seed)
    return source.iter_batches(batch_size, 0, seed)


class TensorFeatureSource:
    """In-memory :class:`FeatureSource`.

    Args:
        feats: (n, d) float features (converted to float32).
        labels: (n, C) multi-hot {0, 1} labels (entries > 0 are positives).
    """

    def __init__(self, feats, labels):
        self.feats = torch.as_tensor(feats, dtype=torch.float32)
        self.labels = (torch.as_tensor(labels) > 0).float()
        if self.feats.ndim != 2 or self.labels.ndim != 2 or len(self.feats) != len(self.labels):
            raise ValueError(f"feats {tuple(self.feats.shape)} and labels {tuple(self.labels.shape)} must be "
                             "(n, d) and (n, C) with the same n")
        check_finite(self.feats, "TensorFeatureSource features")
        self.feature_dim = self.feats.shape[1]
        self.num_classes = self.labels.shape[1]

    def __len__(self) -> int:
        return len(self.feats)

    def iter_batches(self, batch_size: int, epoch: int, seed: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(derive_seed(seed, epoch))
        order = torch.randperm(len(self), generator=gen)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            yield self.feats[rows], self.labels[rows]

    def split(self, fraction: float, seed: int) -> Tuple["TensorFeatureSource", "TensorFeatureSource"]:
        """Random ``(1 - fraction, fraction)`` split of the rows: ``(train, val)``."""
        n_val = int(round(fraction * len(self)))
        if not 0 < n_val < len(self):
            raise ValueError(f"validation fraction {fraction} leaves an empty split of {len(self)} samples")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(derive_seed(seed, SPLIT_KEY)))
        val, train = order[:n_val].sort().values, order[n_val:].sort().values
        return (TensorFeatureSource(self.feats[train], self.labels[train]),
                TensorFeatureSource(self.feats[val], self.labels[val]))

