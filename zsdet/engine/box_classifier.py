"""Stage 6: retrain the detector's box classifier on real, mixed and synthesized RoI features.

The classifier scores ``K + 1`` columns (all classes of the split, background last) and is
trained with softmax cross-entropy against *soft* targets: a single-label feature targets its
class, a multi-label mixture spreads its target uniformly over its labels, background RoIs
target the background column. Box regression is left as stage 1 trained it.
"""
import logging
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

logger = logging.getLogger(__name__)


def soft_targets(multi_hot: torch.Tensor) -> torch.Tensor:
    """Row-normalise (n, K + 1) non-negative label weights; an all-zero row is an error."""
    mass = multi_hot.sum(1, keepdim=True)
    if bool((mass <= 0).any()):
        raise ValueError("a training feature has an empty label set")
    return multi_hot / mass


def fit_box_classifier(classifier: nn.Module, features: torch.Tensor, targets: torch.Tensor, *,
                       epochs: int, batch_size: int, lr: float, weight_decay: float = 0.0,
                       seed: int = 0, device: str = "cpu") -> Dict[str, float]:
    """Train ``classifier`` in place with soft-target cross-entropy and Adam.

    Args:
        classifier: module mapping (B, d) features to (B, K + 1) logits.
        features: (n, d) float32; targets: (n, K + 1) rows summing to 1.
        epochs, batch_size, lr, weight_decay: optimisation settings.
        seed: fixes the shuffling.

    Returns:
        {"loss": mean loss of the last epoch, "train_accuracy": argmax agreement on the last epoch}.
    """
    if features.ndim != 2 or len(features) != len(targets):
        raise ValueError(f"features {tuple(features.shape)} vs targets {tuple(targets.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError("non-finite values in the classifier's training features")
    classifier.to(device).train()
    opt = torch.optim.Adam(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = len(features)
    stats = {}
    for epoch in tqdm(range(epochs), desc="box classifier", leave=False):
        order = torch.randperm(n, generator=gen)
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            x, t = features[idx].to(device), targets[idx].to(device)
            logits = classifier(x)
            loss = -(t * F.log_softmax(logits, dim=1)).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.detach() * len(idx)
            correct += (logits.argmax(1) == t.argmax(1)).sum()
        stats = {"loss": float(total_loss) / n, "train_accuracy": float(correct) / n}
        logger.info("box classifier epoch %d: %s", epoch, stats)
    classifier.eval()
    return stats


def balanced_rows(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``per_class`` random row indices of each label value (all rows of rarer labels)."""
    order = rng.permutation(len(labels))
    ranked = labels[order]
    # rank of each row within its label, computed by a stable sort instead of a loop over labels
    by_label = np.argsort(ranked, kind="stable")
    sorted_labels = ranked[by_label]
    first = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty(len(labels), dtype=np.int64)
    rank[by_label] = np.arange(len(labels)) - first
    return np.sort(order[rank < per_class])
