"""Model selection of the generator: "train on synthetic, test on real".

After each epoch one feature is synthesized for each of ``VAL_SYNTH_SETS`` label sets drawn once
from the training split; a ridge-regression probe (:func:`ridge_probe_scores`) fitted on them
scores the held-out real seen features, and its mAP over the seen classes (standard convention)
is the epoch's score. Closed form and float64: deterministic, and free of the epochs /
learning-rate choices an SGD probe would add.
"""
from dataclasses import dataclass

import torch

from ..data.feature_source import FeatureSource, check_finite
from ..data.seeded_rng import VAL_KEY, derive_seed
from ..evaluation import mean_average_precision
from .label_sets import LabelSets
from .scaling import FeatureScaler

__all__ = ["ValidationSet", "validation_set", "probe_map", "ridge_probe_scores"]

READ_BATCH = 4096  # rows per read of the validation source


@dataclass
class ValidationSet:
    """x: (m, d) real seen features, scaled, on the trainer's device; y: (m, S) float {0, 1} labels
    of the S seen classes (CPU); sets: the label sets to synthesize one feature each for."""

    x: torch.Tensor
    y: torch.Tensor
    sets: LabelSets


def validation_set(val: FeatureSource, max_samples: int, num_sets: int, seed: int, train_sets: LabelSets,
                   seen_classes: torch.Tensor, scaler: FeatureScaler, device) -> ValidationSet:
    """The first ``max_samples`` rows of ``val`` (epoch 0 order) and ``num_sets`` random sets of
    ``train_sets`` (drawn with ``derive_seed(seed, VAL_KEY)``)."""
    xs, ys, n = [], [], 0
    for x, y in val.iter_batches(READ_BATCH, 0, seed):
        check_finite(x, "validation features")
        xs.append(x)
        ys.append(y)
        n += len(x)
        if n >= max_samples:
            break
    x, y = torch.cat(xs)[:max_samples], torch.cat(ys)[:max_samples]
    gen = torch.Generator().manual_seed(derive_seed(seed, VAL_KEY))
    rows = torch.randperm(len(train_sets), generator=gen)[:num_sets]
    return ValidationSet(scaler.transform(x.to(device)), (y[:, seen_classes] > 0).float(), train_sets[rows])


def probe_map(synth_x: torch.Tensor, synth_y: torch.Tensor, val: ValidationSet, ridge: float) -> float:
    """mAP (in [0, 1]) on ``val`` of the ridge probe fitted on synthesized ``(synth_x (n, d), synth_y (n, S))``."""
    return mean_average_precision(ridge_probe_scores(synth_x, synth_y, val.x, ridge).cpu(), val.y)


def ridge_probe_scores(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                       ridge: float) -> torch.Tensor:
    """Scores (m, K) of the ridge-regression linear head fitted on ``(train_x (n, d), train_y (n, K))``.

    ``W = argmin ||X_c W - Y_c||^2 + lam ||W||^2`` on centred data, ``lam = ridge * trace(X_c^T X_c) / d``,
    solved in closed form (dual form, an (n, n) system, when n < d) in float64.
    """
    x, y, t = train_x.double(), train_y.double(), test_x.double()
    mean = x.mean(0)
    x, y = x - mean, y - y.mean(0)
    lam = ridge * (x * x).sum() / x.shape[1] + 1e-12
    if len(x) < x.shape[1]:
        w = x.T @ torch.linalg.solve(x @ x.T + lam * torch.eye(len(x), dtype=x.dtype, device=x.device), y)
    else:
        w = torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype, device=x.device), x.T @ y)
    return ((t - mean) @ w).float()
