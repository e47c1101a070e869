"""Semantic cycle consistency: synthesized features must map back to their class embedding.

A frozen linear regressor ``R: x -> e`` is fitted once, in closed form (ridge), on the real seen
training features (scaled as the generator sees them) and the mean embeddings ``e_mu`` of their
label sets. The generator then pays ``SEMANTIC_WEIGHT * mean(1 - cos(R(x~), e_mu))`` for its
features of the training label sets and, with ``SEMANTIC_UNSEEN``, of single *unseen* classes
(classes without a training positive; no unseen feature is needed, only its embedding). With
``SEMANTIC_FLOOR`` a batch pays only what its mean exceeds the real training features' mean
(``relu(mean - real_loss)``): synthesized features are asked to be as consistent with their
embedding as real ones, not more. The
adversarial and classifier terms only see seen classes; this term tells the generator where a
regressor of real features expects each unseen class (cycle-consistent feature generation, Felix
et al., ECCV 2018; the semantic decoder of tf-VAEGAN, Narayan et al., ECCV 2020).
"""
from typing import Callable, Iterable, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .label_sets import LabelSets

__all__ = ["RIDGE", "SemanticRegressor", "fit_semantic_regressor", "semantic_cycle_loss", "unseen_singles"]

RIDGE = 0.1  # ridge of the regressor, relative to the mean energy of a (scaled) feature dimension


class SemanticRegressor(nn.Linear):
    """``nn.Linear(d, a)`` with the buffer ``real_loss`` (float32 scalar): the mean cycle loss of the
    real features it was fitted on."""

    def __init__(self, feature_dim: int, embed_dim: int):
        super().__init__(feature_dim, embed_dim)
        self.register_buffer("real_loss", torch.zeros(()))


@torch.no_grad()
def fit_semantic_regressor(batches: Callable[[], Iterable[Tuple[torch.Tensor, torch.Tensor]]], feature_dim: int,
                           embed_dim: int, device) -> SemanticRegressor:
    """Ridge regression of embeddings on features, from streamed batches, in float64 (two passes:
    the fit, then the real features' mean cycle loss). The ridge convention of
    :func:`zsdet.evaluation.feature_quality.ridge_probe_scores`, accumulated as a Gram matrix so that
    memory does not grow with the number of rows.

    Args:
        batches: ``batches()`` yields ``(x (B, d), e (B, a))`` on ``device``: scaled real features and
            the mean embedding of each one's label set; the same rows at every call.
        feature_dim, embed_dim: d and a.
    Returns:
        The regressor (frozen, on ``device``) minimising ``||x W^T + b - e||^2 + lam ||W||^2`` with
        ``lam = RIDGE * trace(X_c^T X_c) / d`` (``X_c``: centred features).
    Raises:
        ValueError: no batch.
    """
    gram = torch.zeros(feature_dim + 1, feature_dim + 1, dtype=torch.float64, device=device)
    cross = torch.zeros(feature_dim + 1, embed_dim, dtype=torch.float64, device=device)
    for x, e in batches():
        x1 = torch.cat([x.double(), x.new_ones(len(x), 1, dtype=torch.float64)], 1)
        gram += x1.T @ x1
        cross += x1.T @ e.double()
    n = gram[-1, -1]
    if n < 1:
        raise ValueError("the semantic regressor has no training feature")
    mean = gram[-1, :-1] / n
    centred_energy = (gram.diagonal()[:-1] - n * mean ** 2).sum().clamp_min(1e-12)
    penalty = torch.full((feature_dim + 1,), float(RIDGE * centred_energy / feature_dim), dtype=torch.float64,
                         device=device)
    penalty[-1] = 0  # the bias is not shrunk
    solution = torch.linalg.solve(gram + torch.diag(penalty), cross)  # (d + 1, a)
    regressor = SemanticRegressor(feature_dim, embed_dim).to(device)
    regressor.weight.copy_(solution[:-1].T)
    regressor.bias.copy_(solution[-1])
    total = torch.zeros((), dtype=torch.float64, device=device)
    for x, e in batches():
        total += semantic_cycle_loss(regressor, x, e).double() * len(x)
    regressor.real_loss.fill_(float(total / n))
    return regressor.requires_grad_(False)


def semantic_cycle_loss(regressor: nn.Module, fake: torch.Tensor, e_mu: torch.Tensor,
                        floor: bool = False) -> torch.Tensor:
    """``mean_b (1 - cos(R(fake_b), e_mu_b))`` in float32: 0 when every feature maps onto its
    embedding's direction, 1 when orthogonal; with ``floor``, only what it exceeds the regressor's
    ``real_loss`` (``relu(mean - real_loss)``). fake: (B, d) scaled features; e_mu: (B, a)."""
    loss = (1 - F.cosine_similarity(regressor(fake).float(), e_mu.float(), dim=1)).mean()
    return torch.relu(loss - regressor.real_loss) if floor else loss


def unseen_singles(unseen: torch.Tensor, n: int) -> LabelSets:
    """One-class label sets of the class ids ``unseen`` (K,) int64 (CPU), each repeated
    ``max(1, round(n / K))`` times: about ``n`` sets, every unseen class equally often, no randomness."""
    idx = unseen.cpu().repeat(max(1, round(n / len(unseen)))).view(-1, 1)
    return LabelSets(idx, torch.ones_like(idx, dtype=torch.bool))
