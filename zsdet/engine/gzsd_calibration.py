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

``ZSD.CLASSIFIER.CALIBRATION_REFERENCE`` ``"detector"`` counts the budget instead from the seen
detector's own box classifier on the same RoIs (its unseen columns left out: it never scored them),
the issue's meaning of "seen objects labelled right fall by at most the budget"; the retrained
classifier can then start below the budget's floor, and :func:`choose_seen_bias` goes below 0
(raising the seen logits) until it is back within the budget, down to ``lowest_bias``
(``ZSD.CLASSIFIER.MIN_SEEN_LOGIT_BIAS``), which it keeps when no bias reaches the budget.
"""
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..modeling.zsd_predictor import gzsd_probs, seen_columns

__all__ = ["BIAS_GRID", "REFERENCES", "top1_accuracy", "seen_columns_top1", "seen_roi_labels", "choose_seen_bias",
           "detector_logits", "fold_seen_bias", "fold_unseen_bias"]

BIAS_GRID = np.round(np.arange(0.0, 10.0 + 1e-9, 0.25), 2)  # candidate seen-logit biases (negated: below 0)
REFERENCES = ("classifier", "detector")  # ZSD.CLASSIFIER.CALIBRATION_REFERENCE


def _top1(logits: torch.Tensor, unseen_mask: torch.Tensor, scoring: str, seen_thresh: float, bias: float):
    """(labelled (n,) bool: some class above probability 0, top (n,) class, seen_mask (K + 1,)) under
    GZSD scoring with the seen logits lowered by ``bias``; background excluded."""
    seen_mask = seen_columns(unseen_mask)
    lowered = logits - bias * seen_mask.to(logits.dtype)
    best, top = gzsd_probs(lowered, unseen_mask, scoring, 0.0, seen_thresh)[:, :-1].max(1)
    return best > 0, top, seen_mask


def _percent(rows: torch.Tensor) -> float:
    return 100.0 * float(rows.double().mean())


def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor, unseen_mask: torch.Tensor, scoring: str,
                  seen_thresh: float, bias: float) -> float:
    """Percent of the rows whose highest-probability class (background excluded) under GZSD scoring
    with the seen logits lowered by ``bias`` is their label; logits (n, K + 1), labels (n,). A row
    whose classes all have probability 0 (grouped scoring's floor, columns at -inf) has no label."""
    labelled, top, _ = _top1(logits, unseen_mask, scoring, seen_thresh, bias)
    return _percent(labelled & (top == labels))


def seen_columns_top1(logits: torch.Tensor, labels: torch.Tensor, unseen_mask: torch.Tensor) -> float:
    """Percent of the rows whose highest *seen* logit is their class (the seen classes told apart,
    background and unseen columns ignored); logits (n, K + 1), labels (n,) seen classes."""
    seen_mask = seen_columns(unseen_mask)
    return _percent(logits.masked_fill(~seen_mask, float("-inf")).argmax(1) == labels)


def seen_roi_labels(logits: torch.Tensor, labels: torch.Tensor, unseen_mask: torch.Tensor, scoring: str,
                    seen_thresh: float, bias: float) -> Dict[str, float]:
    """Where seen RoIs' GZSD top-1 labels go (percent of rows; as :func:`top1_accuracy`): ``own``
    class, ``other_seen``, ``unseen`` class, ``none`` (no class above 0); and
    :func:`seen_columns_top1`. logits (n, K + 1), labels (n,) seen classes."""
    labelled, top, seen_mask = _top1(logits, unseen_mask, scoring, seen_thresh, bias)
    return {"own": _percent(labelled & (top == labels)),
            "other_seen": _percent(labelled & seen_mask[top] & (top != labels)),
            "unseen": _percent(labelled & unseen_mask[top]), "none": _percent(~labelled),
            "seen_columns_top1": seen_columns_top1(logits, labels, unseen_mask)}


def choose_seen_bias(logits: torch.Tensor, labels: torch.Tensor, unseen_ids: Sequence[int], scoring: str,
                     seen_thresh: float, budget: float, reference_top1: Optional[float] = None,
                     lowest_bias: float = 0.0) -> Dict:
    """The largest bias of ``BIAS_GRID`` within ``budget`` points of seen top-1 accuracy (module docstring).

    Args:
        logits: (n, K + 1) classifier outputs of held-out real seen RoIs; labels: (n,) their classes.
        unseen_ids: the unseen columns; scoring, seen_thresh: ``MODEL.ZSD.GZSD_SCORING`` /
            ``GZSD_SEEN_THRESH``; budget: ``ZSD.CLASSIFIER.SEEN_ACCURACY_BUDGET`` (points).
        reference_top1: the seen top-1 accuracy (percent) the budget counts from; default: at bias 0.
            A reference already more than ``budget`` above bias 0 gives bias 0, or with ``lowest_bias``
            < 0 the first of -0.25, -0.5, ... (down to ``lowest_bias``, at least -10) back within the
            budget, or ``lowest_bias`` when none is (a multiple of 0.25, checked with the settings).
    Returns:
        {"seen_logit_bias", "seen_top1_at_0", "seen_top1", "reference_top1", "budget", "within_budget",
        "lowest_bias", "num_rois", "scoring"}.
    """
    if not len(labels):
        raise ValueError("GZSD calibration needs held-out real seen RoIs, got none")
    unseen_mask = torch.zeros(logits.shape[1], dtype=torch.bool)
    unseen_mask[list(unseen_ids)] = True

    def accuracy_at(b: float) -> float:
        return top1_accuracy(logits, labels, unseen_mask, scoring, seen_thresh, b)

    accuracy = [accuracy_at(b) for b in BIAS_GRID]
    reference = accuracy[0] if reference_top1 is None else float(reference_top1)
    floor = reference - budget
    outside = np.nonzero(np.asarray(accuracy) < floor)[0]
    best = max(int(outside[0]) - 1, 0) if len(outside) else len(BIAS_GRID) - 1  # the grid up to the first miss
    bias, top1 = float(BIAS_GRID[best]), accuracy[best]
    if top1 < floor:
        for candidate in -BIAS_GRID[1:][BIAS_GRID[1:] <= -lowest_bias + 1e-9]:  # raise the seen logits step by step
            bias, top1 = float(candidate), accuracy_at(float(candidate))
            if top1 >= floor:
                break
    return {"seen_logit_bias": bias, "seen_top1_at_0": accuracy[0], "seen_top1": top1, "reference_top1": reference,
            "budget": float(budget), "within_budget": bool(top1 >= floor), "lowest_bias": float(lowest_bias),
            "num_rois": int(len(labels)), "scoring": scoring}


def detector_logits(weight: torch.Tensor, bias: torch.Tensor, features: torch.Tensor, num_columns: int,
                    unseen_ids: Sequence[int]) -> torch.Tensor:
    """Logits (n, num_columns) of the seen detector's linear box classifier (``weight`` (K + 1, d),
    ``bias`` (K + 1,), background last) on ``features`` (n, d), laid out as the retrained
    classifier's columns (background last); its unseen columns and any column past its K classes
    are -inf (it never scored them)."""
    own = features @ weight.T + bias  # (n, K + 1)
    k = own.shape[1] - 1
    out = own.new_full((len(features), num_columns), float("-inf"))
    out[:, :k], out[:, -1] = own[:, :k], own[:, -1]
    out[:, list(unseen_ids)] = float("-inf")
    return out


@torch.no_grad()
def fold_seen_bias(classifier: nn.Module, seen_ids: Sequence[int], bias: float) -> None:
    """Subtract ``bias`` from the seen rows of ``classifier``'s bias (an ``nn.Linear``'s, an
    :class:`~zsdet.modeling.MLPBoxClassifier`'s output layer's or a
    :class:`~zsdet.modeling.SeenGroupMLPClassifier`'s added bias), in place."""
    classifier.bias[list(seen_ids)] -= bias


@torch.no_grad()
def fold_unseen_bias(classifier: nn.Module, unseen_ids: Sequence[int], bias: float) -> None:
    """Add ``bias`` to the unseen rows of ``classifier``'s bias (as :func:`fold_seen_bias`), in place."""
    classifier.bias[list(unseen_ids)] += bias
