"""Multi-label RoI "mixtures": random sets of single-label RoI features fused into one feature.

The detection extension of the paper (Sec. 5) builds a pool of multi-label RoI features by
integrating random sets of single-label RoI features; these serve as *real* multi-label
features for the generator and the retrained classifier. A mixture of a set S is the mean of
its members' features; its label is the union of their labels. The generator stage streams its
mixtures (:class:`~zsdet.data.roi_stream.RoIBankSource`); the classifier stage fuses them in memory.
"""
from typing import Tuple

import numpy as np
import torch

MIXTURE_CHUNK = 4096  # mixtures fused at once: bounds the (chunk, set size, d) gather


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


def fuse_mixtures_into(features: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, mask: torch.Tensor,
                       out_x: torch.Tensor, out_y: torch.Tensor) -> None:
    """:func:`fuse_mixtures` written into ``out_x`` (M, d) and ``out_y`` (M, num_classes) chunk by chunk
    (``MIXTURE_CHUNK`` sets at once), so that the (M, S, d) gather is never built. ``out_x`` may be a
    view of ``features`` past the rows that ``idx`` reads."""
    for start in range(0, len(idx), MIXTURE_CHUNK):
        part = slice(start, start + MIXTURE_CHUNK)
        out_x[part], out_y[part] = fuse_mixtures(features, labels, idx[part], mask[part], out_y.shape[1])
