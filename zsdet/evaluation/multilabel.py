"""Multi-label classification metrics: per-label AP, mAP, "overall" F1 / P / R at top-K.

All functions take ``scores`` and ``labels`` of shape ``(n_images, n_classes)`` as numpy arrays or
torch tensors (any device) and return values in ``[0, 1]``.

Label encoding: every entry of ``labels`` must be -1, 0 or 1 (bool, int or float arrays).
``1`` is a positive, ``-1`` a negative. ``0`` is a negative in plain multi-hot data (NUS-WIDE
{0, 1}) and "unknown / ignore" in signed data that marks verified negatives with -1 (Open Images);
the caller says which with ``ignore_zero`` (see :func:`average_precision_per_label`).

Ties: equal scores are one threshold. AP is computed on the precision-recall points reached after
*all* tied items have entered the ranking (the definition of scikit-learn's
``average_precision_score``), so the result never depends on the order of tied items. The
official Generative_MLZSL / LESA code sorts with ``torch.sort`` and so breaks ties arbitrarily.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["average_precision_per_label", "mean_average_precision", "mean_of_label_aps", "f1_at_k",
           "top_k_true_positives", "f1_from_counts"]

CONVENTIONS = ("standard", "official")
# Entries processed at once: keeps temporaries small for NUS-WIDE-sized inputs (84k x 1006).
_CHUNK_ELEMENTS = 1 << 21


def as_numpy(x) -> np.ndarray:
    """numpy view of a numpy array, sequence or torch tensor (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.float() if x.dtype == torch.bfloat16 else x
        x = x.numpy()
    return np.asarray(x)


def _check_inputs(scores, labels) -> Tuple[np.ndarray, np.ndarray]:
    """Return ``(scores float (n, C), labels int8 (n, C))`` or raise ``ValueError``."""
    s = as_numpy(scores)
    y = as_numpy(labels)
    if s.ndim != 2 or y.ndim != 2:
        raise ValueError(
            "scores and labels must be 2-d (n_images, n_classes); "
            f"got shapes {s.shape} and {y.shape}"
        )
    if s.shape != y.shape:
        raise ValueError(f"scores shape {s.shape} does not match labels shape {y.shape}")
    if s.size == 0:
        raise ValueError(f"empty input: scores/labels have shape {s.shape}")
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if np.isnan(s).any():
        rows, cols = np.nonzero(np.isnan(s))
        raise ValueError(
            f"scores contain {rows.size} NaN value(s), first at (image {rows[0]}, class {cols[0]})"
        )
    if y.dtype == bool:
        y = y.astype(np.int8)
    bad = (y != 1) & (y != 0) & (y != -1)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise ValueError(
            f"labels must be in {{-1, 0, 1}}; got {y[rows[0], cols[0]]!r} at "
            f"(image {rows[0]}, class {cols[0]})"
        )
    return s, y.astype(np.int8)


def _resolve_ignore_zero(convention: str, ignore_zero: Optional[bool]) -> bool:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown AP convention {convention!r}; expected one of {CONVENTIONS}")
    if convention == "official":
        if ignore_zero is False:
            raise ValueError("convention='official' always reads label 0 as ignore; "
                             "drop ignore_zero=False or use convention='standard'")
        return True
    return bool(ignore_zero)


def average_precision_per_label(
    scores, labels, *, convention: str = "standard", ignore_zero: Optional[bool] = None
) -> np.ndarray:
    """Average precision of each label (column), ranking the images by that label's score.

    For label c, let the distinct scores of its counted images be thresholds t_1 > t_2 > ...;
    P_j and R_j are the precision and recall of "predict positive iff score >= t_j". Then
    ``AP_c = sum_j (R_j - R_{j-1}) * P_j`` with ``R_0 = 0``. Without ties this is the mean of the
    precision at the rank of each positive (non-interpolated AP, as in the official code).

    Args:
        scores: (n_images, n_classes) float scores; higher = more confident. NaN is an error.
        labels: (n_images, n_classes) in {-1, 0, 1}.
        convention: ``"standard"`` (default) or ``"official"``:

            * ``"standard"``: a label with no positive has no defined AP and gets NaN (skipped by
              :func:`mean_average_precision`). Label 0 is a negative unless ``ignore_zero``.
            * ``"official"``: the Generative_MLZSL / LESA evaluation code. Only entries equal to
              +-1 are ranked (label 0 = ignore), and a label with no positive gets AP 0.
        ignore_zero: only for ``"standard"``: True drops label-0 entries from the ranking
            (signed data with unknowns). Default False; ``"official"`` implies True.

    Returns:
        (n_classes,) float64 AP in [0, 1]; NaN for labels without a positive (standard only).
    """
    s, y = _check_inputs(scores, labels)
    ignore = _resolve_ignore_zero(convention, ignore_zero)
    step = max(1, _CHUNK_ELEMENTS // s.shape[0])  # columns per block: bounds temporary memory
    ap = np.concatenate([_ap_of_columns(s[:, j:j + step], y[:, j:j + step], ignore)
                         for j in range(0, s.shape[1], step)])
    return np.where(np.isnan(ap) & (convention == "official"), 0.0, ap)


def _ap_of_columns(s: np.ndarray, y: np.ndarray, ignore_zero: bool) -> np.ndarray:
    """AP of each column of ``s`` (n, c) / ``y`` (n, c); NaN for columns without positive."""
    order = np.argsort(-s, axis=0, kind="stable")
    s_sorted = np.take_along_axis(s, order, axis=0)
    y_sorted = np.take_along_axis(y, order, axis=0)
    is_pos = y_sorted == 1
    counted = (y_sorted != 0) if ignore_zero else np.ones_like(is_pos)
    cum_tp = np.cumsum(is_pos, axis=0)
    cum_counted = np.cumsum(counted, axis=0)
    # Each item takes the precision reached at the end of its tie group (last index with its score).
    n = s.shape[0]
    last_of_group = np.ones_like(is_pos)
    last_of_group[:-1] = s_sorted[:-1] != s_sorted[1:]
    end_idx = np.where(last_of_group, np.arange(n)[:, None], n)
    end_idx = np.minimum.accumulate(end_idx[::-1], axis=0)[::-1]
    tp_at_end = np.take_along_axis(cum_tp, end_idx, axis=0)
    counted_at_end = np.take_along_axis(cum_counted, end_idx, axis=0)
    precision = tp_at_end / np.maximum(counted_at_end, 1)
    num_pos = is_pos.sum(axis=0)
    ap_sum = (precision * is_pos).sum(axis=0)
    return np.where(num_pos > 0, ap_sum / np.maximum(num_pos, 1), np.nan)


def mean_average_precision(
    scores, labels, *, convention: str = "standard", ignore_zero: Optional[bool] = None
) -> float:
    """Mean over labels of :func:`average_precision_per_label`, in [0, 1].

    ``"standard"`` (default) averages over the labels that have at least one positive: AP is
    undefined without positives, and counting such labels as 0 would make the score depend on
    which classes happen to be absent from the test set rather than on the model.
    ``"official"`` averages over *all* labels, a label without positive counting as 0 (and reads
    label 0 as ignore), which reproduces the numbers of the paper's tables.

    Raises:
        ValueError: bad shapes / values (see module docstring), or, for ``"standard"``, no label
            has a positive.
    """
    ap = average_precision_per_label(scores, labels, convention=convention, ignore_zero=ignore_zero)
    return mean_of_label_aps(ap)


def mean_of_label_aps(ap: np.ndarray) -> float:
    """Mean of a (C,) output of :func:`average_precision_per_label`, skipping NaN (labels without
    positive); ValueError when every entry is NaN."""
    if np.isnan(ap).all():
        raise ValueError("mAP is undefined: no label column has a positive entry (label 1)")
    return float(np.nanmean(ap))


def f1_at_k(scores, labels, k: int) -> Tuple[float, float, float]:
    """"Overall" (micro) F1, precision and recall when each image predicts its top-``k`` labels.

    ``P = TP / (n_images * k')``, ``R = TP / #(labels == 1)``, ``F1 = 2PR / (P + R)`` (0 when
    ``P + R = 0``), where TP counts predicted entries with label 1 and ``k' = min(k, n_classes)``
    (a ``k`` above the number of labels predicts every label). Label 0 and -1 entries are both
    "not positive" here, as in the official code. Ties at the top-k boundary go to the lower
    class index (stable sort), so results are deterministic.

    Args:
        scores: (n_images, n_classes) float; labels: (n_images, n_classes) in {-1, 0, 1}.
        k: number of labels predicted per image, >= 1.

    Returns:
        (f1, precision, recall), floats in [0, 1].

    Raises:
        ValueError: bad shapes / values, ``k < 1``, or no positive label at all (recall undefined).
    """
    s, y = _check_inputs(scores, labels)
    (k,) = _check_ks([k])
    (tp,), num_pos = _top_k_true_positives(s, y, (k,))
    return f1_from_counts(tp, num_pos, s.shape[0] * min(k, s.shape[1]))


def top_k_true_positives(scores, labels, ks: Sequence[int]) -> Tuple[np.ndarray, int]:
    """The counts behind :func:`f1_at_k`, summable over row chunks of a larger matrix.

    Args:
        scores: (n_images, n_classes) float; labels: (n_images, n_classes) in {-1, 0, 1}.
        ks: the K values, each >= 1 (one stable sort serves them all).

    Returns:
        ``(tp (len(ks),) int64, num_positives)``: per K, the label-1 entries among the images'
        top-K scores (ties to the lower class index); and the number of label-1 entries.
    """
    s, y = _check_inputs(scores, labels)
    return _top_k_true_positives(s, y, _check_ks(ks))


def _check_ks(ks: Sequence[int]) -> Tuple[int, ...]:
    if len(ks) == 0:
        raise ValueError("no K given for the top-K counts")
    for k in ks:
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
    return tuple(int(k) for k in ks)


def _top_k_true_positives(s: np.ndarray, y: np.ndarray, ks: Tuple[int, ...]) -> Tuple[np.ndarray, int]:
    """:func:`top_k_true_positives` of checked inputs, in row blocks that bound temporary memory."""
    k_max = min(max(ks), s.shape[1])
    step = max(1, _CHUNK_ELEMENTS // s.shape[1])
    hits = np.zeros(k_max, np.int64)  # hits[r]: label-1 entries at rank r of the images' orders
    for i in range(0, s.shape[0], step):
        top = np.argsort(-s[i:i + step], axis=1, kind="stable")[:, :k_max]
        hits += (np.take_along_axis(y[i:i + step], top, axis=1) == 1).sum(axis=0)
    cum = np.cumsum(hits)
    return cum[[min(k, k_max) - 1 for k in ks]], int((y == 1).sum())


def f1_from_counts(tp: int, num_positives: int, num_predicted: int) -> Tuple[float, float, float]:
    """``(f1, precision, recall)`` from ``tp`` of ``num_predicted`` predictions (n_images * k')
    and ``num_positives`` label-1 entries (see :func:`f1_at_k`).

    Raises:
        ValueError: ``num_positives == 0`` (recall undefined).
    """
    if num_positives == 0:
        raise ValueError("F1@K is undefined: labels contain no positive entry (label 1)")
    precision = int(tp) / num_predicted
    recall = int(tp) / num_positives
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return float(f1), float(precision), float(recall)
