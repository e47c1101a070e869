"""Model selection of the generator: "train on synthetic, test on real" (TSTR).

After each epoch one feature is synthesized for each of ``VAL_SYNTH_SETS`` label sets drawn once
from the training split; a ridge-regression probe fitted on them
(:func:`~zsdet.evaluation.feature_quality.tstr_map`) scores the held-out real seen features, and
its mAP over the seen classes (standard convention) is the epoch's score. With real background
features (detection: background RoIs of the training images for the probe, of the held-out images
for the test), the probe gets a background column, a row's class score is taken against its
background score, and held-out background rows are negatives of every class.
Closed form and float64: deterministic, and free of the epochs / learning-rate choices an SGD
probe would add.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from ..data.feature_source import FeatureSource, check_finite
from ..data.seeded_rng import VAL_KEY, derive_seed
from ..evaluation.feature_quality import tstr_map
from .label_sets import LabelSets
from .scaling import FeatureScaler

__all__ = ["ValidationSet", "validation_set", "probe_map", "read_rows"]

READ_BATCH = 4096  # rows per read of the validation source


@dataclass
class ValidationSet:
    """x: (m, d) real held-out features, scaled, on the trainer's device (held-out background rows
    last); y: (m, S) float {0, 1} labels of the S seen classes (CPU; background rows all 0); sets:
    the label sets to synthesize one feature each for; background: (b, d) scaled real background
    features for the probe, or None."""

    x: torch.Tensor
    y: torch.Tensor
    sets: LabelSets
    background: Optional[torch.Tensor] = None


def validation_set(val: FeatureSource, max_samples: int, num_sets: int, seed: int, train_sets: LabelSets,
                   seen_classes: torch.Tensor, scaler: FeatureScaler, device,
                   background: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> ValidationSet:
    """The first ``max_samples`` rows of ``val`` (epoch 0 order) and ``num_sets`` random sets of
    ``train_sets`` (drawn with ``derive_seed(seed, VAL_KEY)``).

    Args:
        background: optional (probe rows (b, d), held-out rows (b', d)) real background features in
            the data's units.
    """
    x, y = read_rows(val, max_samples, seed)
    y = (y[:, seen_classes] > 0).float()
    gen = torch.Generator().manual_seed(derive_seed(seed, VAL_KEY))
    rows = torch.randperm(len(train_sets), generator=gen)[:num_sets]
    probe_background = None
    if background is not None:
        probe_rows, held_out = background
        check_finite(probe_rows, "validation background features")
        check_finite(held_out, "validation background features")
        x, y = torch.cat([x, held_out]), torch.cat([y, y.new_zeros(len(held_out), y.shape[1])])
        probe_background = scaler.transform(probe_rows.to(device))
    return ValidationSet(scaler.transform(x.to(device)), y, train_sets[rows], probe_background)


def read_rows(source: FeatureSource, max_samples: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``max_samples`` rows (x (m, d), y (m, C)) of ``source`` in its epoch-0 order."""
    xs, ys, n = [], [], 0
    for x, y in source.iter_batches(READ_BATCH, 0, seed):
        check_finite(x, "validation features")
        xs.append(x)
        ys.append(y)
        n += len(x)
        if n >= max_samples:
            break
    return torch.cat(xs)[:max_samples], torch.cat(ys)[:max_samples]


def probe_map(synth_x: torch.Tensor, synth_y: torch.Tensor, val: ValidationSet, ridge: float) -> float:
    """TSTR mAP (in [0, 1]) on ``val`` of the ridge probe fitted on synthesized ``(synth_x (n, d),
    synth_y (n, S))`` and ``val``'s background features, if any."""
    return tstr_map(synth_x, synth_y, val.x, val.y, ridge, background_train=val.background)
