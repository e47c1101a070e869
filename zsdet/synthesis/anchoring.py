"""Synthesized features anchored on real ones: ``x_s + G(L, z) - G({s}, z)``.

A feature the generator synthesizes for a label set L carries, besides what tells L's classes
apart, everything by which synthesized features differ from real RoI features (texture, sparsity
pattern, the context and size variation a real box carries); a classifier trained on such unseen
features and real seen ones can learn "synthesized" as the unseen cue, and real unseen RoIs then
fall on the seen side. Anchoring keeps a real RoI and moves only its class: the feature synthesized
for L with noise z becomes

    clamp(x_s + G(L, z) - G({s}, z), low, high)

with x_s a real training RoI of a seen class s, G({s}, z) the generator's feature of s under the
same noise (so what all synthesized features share cancels) and [low, high] the real features'
range per dimension (the scaler's). The anchor class s is drawn among the ``nearest`` seen classes
closest (embedding cosine) to the mean embedding of L (0: any seen class), never a class of L,
and x_s uniformly among the real rows of s. Used by the box classifier's ``ANCHOR_SYNTHESIZED``.
"""
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["anchor_classes", "anchor_rows", "anchored_features"]


def anchor_classes(multi_hot: torch.Tensor, class_embeddings: torch.Tensor, seen_ids: Sequence[int], nearest: int,
                   generator: torch.Generator) -> torch.Tensor:
    """One seen anchor class per label set.

    Args:
        multi_hot: (n, C) label sets; class_embeddings: (C, a); seen_ids: the classes with real rows.
        nearest: draw among the ``nearest`` seen classes closest to the set's mean embedding (0 = all).
    Returns:
        (n,) int64 class ids from ``seen_ids``, none a class of its set.
    """
    seen = torch.as_tensor(list(seen_ids), dtype=torch.int64)
    sets = multi_hot.float()
    mean = (sets @ class_embeddings.float()) / sets.sum(1, keepdim=True).clamp(min=1)
    sim = F.normalize(mean, dim=1) @ F.normalize(class_embeddings[seen].float(), dim=1).T  # (n, S)
    sim = sim.masked_fill(sets[:, seen] > 0, float("-inf"))  # a set's own seen classes are no anchor
    k = len(seen) if nearest <= 0 else min(nearest, len(seen))
    allowed = (sets[:, seen] <= 0).sum(1)
    if bool((allowed == 0).any()):
        raise ValueError("ANCHOR_SYNTHESIZED: a label set holds every seen class; there is no seen anchor for it")
    top = sim.topk(k, dim=1).indices  # (n, k), own classes last
    pick = (torch.rand(len(sets), generator=generator) * allowed.clamp(max=k)).long()
    return seen[top[torch.arange(len(sets)), pick]]


def anchor_rows(classes: torch.Tensor, real_classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(n,) indices into the real rows, each drawn uniformly among the rows of ``classes[i]``.

    Args:
        classes: (n,) int64 anchor classes; real_classes: (m,) int64 class of each real row.
    Raises:
        ValueError: an anchor class without a real row.
    """
    order = torch.argsort(real_classes, stable=True)
    sorted_classes = real_classes[order]
    start = torch.searchsorted(sorted_classes, classes)
    count = torch.searchsorted(sorted_classes, classes, right=True) - start
    if bool((count == 0).any()):
        raise ValueError(f"ANCHOR_SYNTHESIZED: seen class {int(classes[count == 0][0])} has no real training row")
    offset = (torch.rand(len(classes), generator=generator) * count).long()
    return order[start + offset]


def anchored_features(real: torch.Tensor, synthesized: torch.Tensor, synthesized_anchor: torch.Tensor,
                      low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``clamp(real + synthesized - synthesized_anchor, low, high)``, all (n, d) but ``low`` / ``high`` (d,)."""
    return torch.maximum(torch.minimum(real + synthesized - synthesized_anchor, high), low)
