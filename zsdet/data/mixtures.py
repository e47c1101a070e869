"""Multi-label RoI "mixtures": random sets of single-label RoI features fused into one feature.

The detection extension of the paper (Sec. 5) builds a pool of multi-label RoI features by
integrating random sets of single-label RoI features; these serve as *real* multi-label
features for the generator and the retrained classifier. A mixture of a set S is the mean of
its members' features; its label is the union of their labels.
"""
from typing import Iterator, Tuple

import numpy as np
import torch

from ..synthesis import TensorFeatureSource


def sample_mixture_sets(num_rows: int, num_mixtures: int, min_size: int, max_size: int,
                        rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Random row sets, sizes uniform in [min_size, max_size].

    Returns:
        idx: (num_mixtures, max_size) int64 row indices (padding slots hold row 0),
        mask: (num_mixtures, max_size) bool, True for real members.
    """
    if not 1 <= min_size <= max_size:
        raise ValueError(f"need 1 <= min_size ({min_size}) <= max_size ({max_size})")
    if num_rows == 0:
        raise ValueError("cannot build mixtures from an empty feature set")
    sizes = rng.integers(min_size, max_size + 1, size=num_mixtures)
    mask = np.arange(max_size)[None, :] < sizes[:, None]
    idx = np.where(mask, rng.integers(0, num_rows, size=(num_mixtures, max_size)), 0)
    return idx, mask


def fuse_mixtures(features: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor,
                  mask: torch.Tensor, num_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean features and union labels of row sets.

    Args:
        features: (n, d) float; labels: (n,) int64 class ids in [0, num_classes).
        idx, mask: (M, S) from :func:`sample_mixture_sets`.

    Returns:
        (M, d) mean features and (M, num_classes) float multi-hot union labels.
    """
    w = mask.to(features.dtype)
    fused = (features[idx] * w[..., None]).sum(1) / w.sum(1, keepdim=True)
    multi_hot = torch.zeros(len(idx), num_classes, dtype=features.dtype, device=features.device)
    multi_hot.scatter_add_(1, labels[idx], w)  # padded slots add 0
    return fused, multi_hot.clamp_(max=1)


class RoIMixtureSource:
    """A ``FeatureSource`` over single-label foreground RoI features plus fresh mixtures each epoch.

    Args:
        features: (n, d) float32 foreground features; labels: (n,) int64 seen class ids.
        num_classes: C, width of the multi-hot labels.
        mixture_ratio: mixtures per single feature in an epoch (0 disables mixtures).
        min_set_size, max_set_size: mixture set sizes.

    ``iter_batches(batch_size, epoch, seed)`` yields ``(x (B, d) float32, y (B, C) float32)``;
    the order and the mixtures are a pure function of ``(seed, epoch)``.
    """

    def __init__(self, features, labels, num_classes: int, mixture_ratio: float = 0.5,
                 min_set_size: int = 2, max_set_size: int = 3):
        self.features = torch.as_tensor(features, dtype=torch.float32)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        if self.features.ndim != 2 or len(self.features) != len(self.labels):
            raise ValueError(f"features {tuple(self.features.shape)} and labels "
                             f"{tuple(self.labels.shape)} do not match")
        if len(self.labels) and not (0 <= int(self.labels.min()) and int(self.labels.max()) < num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes})")
        self.num_classes = num_classes
        self.feature_dim = self.features.shape[1]
        self.num_mixtures = int(round(mixture_ratio * len(self.labels)))
        self.set_sizes = (min_set_size, max_set_size)

    def __len__(self) -> int:
        return len(self.labels) + self.num_mixtures

    def epoch_data(self, epoch: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """All (features, multi-hot) of one epoch: the single features, then fresh mixtures."""
        singles = torch.nn.functional.one_hot(self.labels, self.num_classes).float()
        if not self.num_mixtures:
            return self.features, singles
        rng = np.random.default_rng([seed, epoch])
        idx, mask = sample_mixture_sets(len(self.labels), self.num_mixtures, *self.set_sizes, rng)
        mx, my = fuse_mixtures(self.features, self.labels, torch.from_numpy(idx),
                               torch.from_numpy(mask), self.num_classes)
        return torch.cat([self.features, mx]), torch.cat([singles, my])

    def iter_batches(self, batch_size: int, epoch: int, seed: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches of :meth:`epoch_data` (the shuffle is the tensor source's, by (seed, epoch))."""
        return TensorFeatureSource(*self.epoch_data(epoch, seed)).iter_batches(batch_size, epoch, seed)
