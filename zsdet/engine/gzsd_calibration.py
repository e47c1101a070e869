"""GZSD calibration of a retrained box classifier: a bias on the seen logits, chosen on validation RoIs.

A classifier retrained on real seen and synthesized unseen features gives real unseen objects a seen
top-1 label most of the time under GZSD scoring (the familiar bias of GZSD towards seen classes).
Subtracting a constant ``b`` from the seen logits (calibrated stacking) moves top-1 labels from seen
to unseen classes, at a cost to seen objects. :func:`choose_seen_bias` takes the largest ``b`` of
``BIAS_GRID`` up to which the cost stays within a budget: on held-out real seen RoIs (images the classifier
never saw), the share whose top-1 class is their own may fall by at most ``budget`` points from
``b = 0``. It needs no unseen example; the choice is made under the configured GZSD scoring
(:func:`zsdet.modeling.zsd_predictor.gzsd_probs`). :func:`fold_seen_bias` writes ``b`` into the
seen rows' biases of the classifier, so the saved model is calibrated with no setting at test time
(ZSD scoring ignores the seen columns and is unchanged).

:func:`fold_unseen_bias` is the setting on the other side (``ZSD.CLASSIFIER.UNSEEN_LOGIT_BIAS``, a
constant, not chosen here): it adds ``u`` to the unseen rows' biases, which multiplies the odds of
every unseen class against background by ``e^u`` wherever unseen classes are scored against it (ZSD,
and GZSD's unseen group), so fewer real unseen RoIs fall under the protocol's score threshold. When
both are set, the budget counts from the classifier before ``u`` (``reference_top1``).
"""
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..modeling.zsd_predictor import gzsd_probs

__all__ = ["BIAS_GRID", "top1_accuracy", "choose_seen_bias", "fold_seen_bias", "fold_unseen_bias"]

BIAS_GRID = np.round(np.arange(0.0, 10.0 + 1e-9, 0.25), 2)  # candidate seen-logit biases


def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor, unseen_mask: torch.Tensor, scoring: str,
                  seen_thresh: float, bias: float) -> float:
    """Percent of the rows whose highest-probability class (background excluded) under GZSD scoring
    with the seen logits lowered by ``bias`` is their label; logits (n, K + 1), labels (n,)."""
    seen_mask = ~unseen_mask
    seen_mask[-1] = False
    lowered = logits - bias * seen_mask.to(logits.dtype)
    top = gzsd_probs(lowered, unseen_mask, scoring, 0.0, seen_thresh)[:, :-1].argmax(1)
    return 100.0 * float((top == labels).double().mean())


def choose_seen_bias(logits: torch.Tensor, labels: torch.Tensor, unseen_ids: Sequence[int], scoring: str,
                     seen_thresh: float, budget: float, reference_top1: Optional[float] = None) -> Dict:
    """The largest bias of ``BIAS_GRID`` within ``budget`` points of seen top-1 accuracy (module docstring).

    Args:
        logits: (n, K + 1) classifier outputs of held-out real seen RoIs; labels: (n,) their classes.
        unseen_ids: the unseen columns; scoring, seen_thresh: ``MODEL.ZSD.GZSD_SCORING`` /
            ``GZSD_SEEN_THRESH``; budget: ``ZSD.CLASSIFIER.SEEN_ACCURACY_BUDGET`` (points).
        reference_top1: the seen top-1 accuracy (percent) the budget counts from; default: at bias 0.
            A reference already more than ``budget`` above bias 0 gives bias 0.
    Returns:
        {"seen_logit_bias", "seen_top1_at_0", "seen_top1", "reference_top1", "budget", "num_rois", "scoring"}.
    """
    if not len(labels):
        raise ValueError("GZSD calibration needs held-out real seen RoIs, got none")
    unseen_mask = torch.zeros(logits.shape[1], dtype=torch.bool)
    unseen_mask[list(unseen_ids)] = True
    accuracy = [top1_accuracy(logits, labels, unseen_mask, scoring, seen_thresh, b) for b in BIAS_GRID]
    reference = accuracy[0] if reference_top1 is None else float(reference_top1)
    outside = np.nonzero(np.asarray(accuracy) < reference - budget)[0]
    best = max(int(outside[0]) - 1, 0) if len(outside) else len(BIAS_GRID) - 1  # the grid up to the first miss
    return {"seen_logit_bias": float(BIAS_GRID[best]), "seen_top1_at_0": accuracy[0], "seen_top1": accuracy[best],
            "reference_top1": reference, "budget": float(budget), "num_rois": int(len(labels)), "scoring": scoring}


@torch.no_grad()
def fold_seen_bias(classifier: nn.Linear, seen_ids: Sequence[int], bias: float) -> None:
    """Subtract ``bias`` from the seen rows of ``classifier``'s bias, in place."""
    classifier.bias[list(seen_ids)] -= bias


@torch.no_grad()
def fold_unseen_bias(classifier: nn.Linear, unseen_ids: Sequence[int], bias: float) -> None:
    """Add ``bias`` to the unseen rows of ``classifier``'s bias, in place."""
    classifier.bias[list(unseen_ids)] += bias
