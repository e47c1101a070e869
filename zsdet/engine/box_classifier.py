"""Stage 6: retrain the detector's box classifier on real, mixed and synthesized RoI features.

The classifier scores ``K + 1`` columns (all classes of the split, background last) and is
trained with softmax cross-entropy against *soft* targets: a single-label feature targets its
class, a multi-label mixture spreads its target uniformly over its labels, background RoIs
target the background column. Box regression is left as stage 1 trained it.

Losses (``ZSD.CLASSIFIER.LOSS``): ``"joint"``, one softmax over all ``K + 1`` columns
(:func:`soft_cross_entropy`); ``"grouped"``, the loss of grouped GZSD scoring
(:func:`grouped_cross_entropy`), which scores with a [seen, background] and an [unseen, background]
softmax (:func:`zsdet.modeling.zsd_predictor.gzsd_probs`). :func:`seen_group_cross_entropy` is its
seen half alone (``ZSD.CLASSIFIER.SEEN_GROUP_LOSS``: the loss of the MLP that gives the seen group).
"""
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data.seeded_rng import derive_seed
from ..modeling.zsd_predictor import seen_columns
from ..synthesis import fit_module


def soft_targets(multi_hot: torch.Tensor) -> torch.Tensor:
    """Row-normalise (n, K + 1) non-negative label weights; an all-zero row is an error."""
    mass = multi_hot.sum(1, keepdim=True)
    if bool((mass <= 0).any()):
        raise ValueError("a training feature has an empty label set")
    return multi_hot / mass


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_k t_k log softmax(logits)_k``; logits, targets: (B, K + 1)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def group_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """The soft cross-entropy of one group of grouped GZSD scoring: the softmax over the columns not in
    ``other`` (the group's classes and background), each row's target its mass on the group's classes
    with the rest (its mass on ``other``) on background. logits, targets: (B, K + 1), background last;
    other: (K + 1,) bool, True for the other group's columns (never background)."""
    log_p = F.log_softmax(logits.masked_fill(other, float("-inf")), dim=1).masked_fill(other, 0.0)
    group_targets = targets.masked_fill(other, 0.0)
    group_targets[:, -1] += (targets * other).sum(1)
    return -(group_targets * log_p).sum(1).mean()


def grouped_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, unseen_mask: torch.Tensor) -> torch.Tensor:
    """The loss of grouped GZSD scoring: the mean of the soft cross-entropies of the [seen,
    background] and the [unseen, background] softmaxes (:func:`group_cross_entropy`).

    So a synthesized unseen feature is background to the seen classes and a real seen one to the
    unseen classes, as grouped scoring meets them. logits, targets: (B, K + 1), background last;
    unseen_mask: (K + 1,) bool, True for unseen columns.
    """
    return (seen_group_cross_entropy(logits, targets, unseen_mask)
            + group_cross_entropy(logits, targets, seen_columns(unseen_mask))) / 2


def seen_group_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, unseen_mask: torch.Tensor) -> torch.Tensor:
    """The seen half of :func:`grouped_cross_entropy`: the [seen, background] softmax alone, every row's
    unseen mass on background (``ZSD.CLASSIFIER.SEEN_GROUP_LOSS`` ``"grouped"``); the unseen columns get
    no gradient. Shapes as there."""
    return group_cross_entropy(logits, targets, unseen_mask)


def fit_box_classifier(classifier: nn.Module, features: torch.Tensor, targets: torch.Tensor, *,
                       epochs: int, batch_size: int, lr: float, weight_decay: float = 0.0,
                       betas: Tuple[float, float] = (0.9, 0.999), seed: int = 0, device: str = "cpu",
                       loss: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None
                       ) -> Dict[str, float]:
    """Train ``classifier`` in place with soft-target cross-entropy and Adam.

    Args:
        classifier: module mapping (B, d) features to (B, K + 1) logits.
        features: (n, d) float32; targets: (n, K + 1) rows summing to 1.
        epochs, batch_size, lr, weight_decay, betas: optimisation settings.
        seed: fixes the shuffling.
        loss: ``(logits, targets) -> scalar``; default :func:`soft_cross_entropy`.

    Returns:
        {"loss": mean loss of the last epoch's batches, "train_accuracy": argmax agreement with the
        targets after training}.
    """
    if features.ndim != 2 or len(features) != len(targets):
        raise ValueError(f"features {tuple(features.shape)} vs targets {tuple(targets.shape)}")
    if not all(bool(torch.isfinite(chunk).all()) for chunk in features.split(1 << 16)):  # no (n, d) mask
        raise ValueError("non-finite values in the classifier's training features")
    if epochs < 1 or batch_size < 1:  # the pipeline names the config keys before any work
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")

    def batches(epoch: int):
        order = torch.randperm(len(features), generator=torch.Generator().manual_seed(derive_seed(seed, epoch)))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            yield features[rows], targets[rows]

    summed = fit_module(classifier, batches, loss or soft_cross_entropy, epochs=epochs, lr=lr, betas=betas,
                        weight_decay=weight_decay, device=device, desc="box classifier")
    with torch.no_grad():
        correct = sum(int((classifier(x.to(device)).argmax(1) == t.to(device).argmax(1)).sum())
                      for x, t in batches(epochs))
    return {"loss": summed / -(-len(features) // batch_size), "train_accuracy": correct / len(features)}

