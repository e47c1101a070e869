"""The scores of a linear classifier on a streamed HDF5 feature file, as a :class:`ScoreStream`."""
from typing import Iterator, Tuple

import numpy as np
import torch
from torch import nn

from ..data.mlzsl import H5FeatureSource, to_signed_labels

__all__ = ["HeadScores"]


class HeadScores:
    """A :class:`~zsdet.evaluation.multilabel_streaming.ScoreStream`: the scores of a linear head on a
    streamed test file (computed on the CPU, a chunk at a time, into numpy buffers) and the file's
    signed labels (:func:`~zsdet.data.mlzsl.to_signed_labels`, decided once for the whole file).

    Raises:
        ValueError: the file's label columns are not the head's classes.
    """

    def __init__(self, head: nn.Linear, source: H5FeatureSource):
        if source.num_label_columns != head.out_features:
            raise ValueError(f"{source.path}: {source.num_label_columns} label columns but the "
                             f"classifier scores {head.out_features} classes")
        self.weight = head.weight.detach().float().cpu()  # (K, d), no copy of a CPU float32 head
        self.bias = head.bias.detach().float().cpu()  # (K,)
        self.source = source
        self.num_images, self.num_classes = len(source), head.out_features
        self.signed = source.has_negative_labels()

    def iter_rows(self, columns: slice, max_rows: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """``(scores (m, c) float32, labels (m, c) int8)`` of the classes ``columns``, file order."""
        weight_t, bias = self.weight[columns].T, self.bias[columns]
        for _, x, lab in self.source.iter_ordered():
            for first in range(0, len(x), max_rows):
                rows = slice(first, first + max_rows)
                scores = np.empty((len(lab[rows]), len(bias)), np.float32)
                torch.addmm(bias, torch.from_numpy(x[rows]), weight_t, out=torch.from_numpy(scores))
                yield scores, to_signed_labels(lab[rows, columns], self.signed)
