"""A box classifier with one hidden layer, for the synthesis-retrained detector.

The retrained classifier is linear by default (the paper's RoI-head classifier). With
``ZSD.CLASSIFIER.HIDDEN_UNITS`` h > 0 it is ``Linear(d, h) -> ReLU -> Linear(h, K + 1)``: a linear
head on the detector's box features cannot put most real unseen RoIs apart from seen ones at a small
seen cost, while a non-linear one trained on real unseen RoIs can
(``benchmarks/zsd_unseen_separability.py``). The output layer's ``bias`` is exposed as the module's,
so the GZSD calibration and the unseen-logit bias fold into it as into a linear head's.
"""
import torch
from torch import nn


class MLPBoxClassifier(nn.Module):
    """Logits (N, K + 1) of box features (N, d) through ``hidden_units`` ReLU units; background last.

    Args:
        feature_dim: d; hidden_units: h >= 1; num_outputs: K + 1.
    """

    def __init__(self, feature_dim: int, hidden_units: int, num_outputs: int):
        super().__init__()
        if hidden_units < 1:
            raise ValueError(f"hidden_units must be >= 1, got {hidden_units}")
        self.hidden = nn.Linear(feature_dim, hidden_units)
        self.out = nn.Linear(hidden_units, num_outputs)

    @property
    def bias(self) -> nn.Parameter:
        """(K + 1,) the output layer's bias: adding to a class's entry adds to its logit."""
        return self.out.bias

    @property
    def in_features(self) -> int:
        return self.hidden.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))
