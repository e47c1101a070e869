"""Zero-shot detection metrics of the SUZOD protocol (``docs/zsd_protocol.md`` section 10).

Detections and ground truth of a whole test set are flat arrays (one row per box, an image index
per row), so every step is vectorised over images and classes:

1. :func:`keep_top_k_per_image`: at most ``k`` detections per image over all classes, by score.
2. :func:`match_detections`: per image and class, detections by descending score take their
   best-IoU GT of the same class: TP if IoU >= t and that GT is still unmatched; FP if that GT is
   already matched (no fallback to the second best), if IoU < t, or if the image has no GT of the
   class; neither TP nor FP if the best GT is an ignore (crowd) box with IoU >= t.
3. :func:`ap_and_recall_per_class`: per class, all detections of the test set sorted by score;
   AP = area under the precision-recall curve with the monotone (running-max) precision envelope
   over all recall steps (VOC 2010+ "area" AP); recall = final recall of all kept detections.
   Ignore boxes do not count in the number of GT ``N_c``.
4. :func:`macro_mean` over classes with at least one GT, and :func:`harmonic_mean` for GZSD.

Conventions:

* Boxes are XYXY in continuous coordinates (detectron2: ``x2 = x + w``, area ``(x2-x1)*(y2-y1)``).
  SUZOD / mmdet v1 store ``x2 = x + w - 1`` and add 1 to widths and heights; the two IoUs differ
  noticeably only for boxes a few pixels wide. IoU comes from detectron2's
  ``matched_pairwise_iou`` (float32, as ``Boxes`` stores it).
* Ties in score are one threshold: the precision-recall curve has one point per distinct score
  of a class, reached after all tied detections (order-independent; mmdet's unstable sort
  breaks such ties arbitrarily). Within one image, detections with equal scores claim GT boxes in
  their input order (detectron2 outputs are sorted by score), and the top-``k`` cut keeps the
  earlier one.
* Ties in IoU go to the earliest GT, normal boxes before ignore boxes (mmdet stacks them so).
"""
from dataclasses import dataclass
from typing import ClassVar, Dict, Sequence, Tuple

import numpy as np
import torch
from detectron2.structures.boxes import Boxes, matched_pairwise_iou

__all__ = [
    "Detections",
    "GroundTruth",
    "ClassMetrics",
    "keep_top_k_per_image",
    "match_detections",
    "ap_and_recall_per_class",
    "evaluate_detections",
    "macro_mean",
    "harmonic_mean",
]


class _BoxColumns:
    """Flat per-box columns of a test set, one row per box: each field of ``COLUMNS`` is stored as
    an array of its dtype, ``boxes`` as (n, 4) and the others as (n,); all of one length."""

    COLUMNS: ClassVar[Dict[str, type]] = {}
    WHAT: ClassVar[str] = ""

    def __post_init__(self):
        for name, dtype in self.COLUMNS.items():
            column = np.asarray(getattr(self, name), dtype=dtype)
            setattr(self, name, column.reshape(-1, 4) if name == "boxes" else column.reshape(-1))
        lengths = {name: len(getattr(self, name)) for name in self.COLUMNS}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{self.WHAT}: arrays have different lengths {lengths}")

    def subset(self, keep: np.ndarray):
        """Rows selected by a (n,) bool mask or index array."""
        return type(self)(*(getattr(self, name)[keep] for name in self.COLUMNS))


@dataclass
class Detections(_BoxColumns):
    """Detections of a test set. image_ids: (D,) int; boxes: (D, 4) XYXY float; scores: (D,)
    float; classes: (D,) int contiguous class ids."""

    image_ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    COLUMNS = {"image_ids": np.int64, "boxes": np.float64, "scores": np.float64, "classes": np.int64}
    WHAT = "detections"

    def __post_init__(self):
        super().__post_init__()
        if np.isnan(self.scores).any():
            raise ValueError(f"detection scores contain NaN (first at row "
                             f"{int(np.flatnonzero(np.isnan(self.scores))[0])})")

    def __len__(self) -> int:
        return self.scores.size


@dataclass
class GroundTruth(_BoxColumns):
    """GT boxes of a test set. image_ids: (G,) int; boxes: (G, 4) XYXY float; classes: (G,) int;
    ignore: (G,) bool, True for crowd / ignore boxes."""

    image_ids: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    ignore: np.ndarray

    COLUMNS = {"image_ids": np.int64, "boxes": np.float64, "classes": np.int64, "ignore": bool}
    WHAT = "ground truth"


@dataclass
class ClassMetrics:
    """Per-class results. iou_thresholds: (T,) ascending; ap, recall: (T, C) in [0, 1], NaN for
    classes without GT; num_gt: (C,) non-ignore GT boxes; num_detections: (C,) kept detections."""

    iou_thresholds: np.ndarray
    ap: np.ndarray
    recall: np.ndarray
    num_gt: np.ndarray
    num_detections: np.ndarray

    def row(self, iou: float) -> int:
        """Index of threshold ``iou`` in ``iou_thresholds``; KeyError if it was not evaluated."""
        hits = np.flatnonzero(np.isclose(self.iou_thresholds, iou))
        if hits.size == 0:
            raise KeyError(f"IoU {iou} not evaluated; have {self.iou_thresholds.tolist()}")
        return int(hits[0])


def _score_order(image_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices sorted by image, then descending score, then input order (stable)."""
    return np.lexsort((np.arange(scores.size), -scores, image_ids))


def keep_top_k_per_image(image_ids: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """(D,) bool mask of the ``k`` highest-scoring detections of each image (all classes together;
    ties keep the earlier row)."""
    if k < 1:
        raise ValueError(f"max detections per image must be >= 1, got {k}")
    order = _score_order(image_ids, scores)
    sorted_ids = image_ids[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(order.size), 0))
    keep = np.zeros(order.size, dtype=bool)
    keep[order] = np.arange(order.size) - start < k
    return keep


def _best_gt(dets: Detections, gt: GroundTruth, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """Best same-image, same-class GT of each detection: (best_iou (D,), best_gt (D,) index into
    ``gt``, -1 where the image has no GT of the detection's class)."""
    key_gt = gt.image_ids * num_classes + gt.classes
    # GT order for IoU ties: (image, class), normal boxes before ignore boxes, then input order.
    gt_order = np.lexsort((np.arange(key_gt.size), gt.ignore, key_gt))
    key_sorted = key_gt[gt_order]
    key_det = dets.image_ids * num_classes + dets.classes
    lo = np.searchsorted(key_sorted, key_det, side="left")
    counts = np.searchsorted(key_sorted, key_det, side="right") - lo
    pair_det = np.repeat(np.arange(len(dets)), counts)
    offset_in_run = np.arange(pair_det.size) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_rank = np.repeat(lo, counts) + offset_in_run  # position in the sorted GT order
    iou = matched_pairwise_iou(
        Boxes(torch.from_numpy(dets.boxes[pair_det])),
        Boxes(torch.from_numpy(gt.boxes[gt_order[pair_rank]])),
    ).numpy()
    iou = np.nan_to_num(iou, nan=0.0)  # two empty boxes: 0 / 0
    best = np.lexsort((pair_rank, -iou, pair_det))  # per detection: highest IoU, earliest GT
    first = np.ones(best.size, dtype=bool)
    first[1:] = pair_det[best][1:] != pair_det[best][:-1]
    best = best[first]
    best_iou = np.zeros(len(dets))
    best_gt = np.full(len(dets), -1, dtype=np.int64)
    best_iou[pair_det[best]] = iou[best]
    best_gt[pair_det[best]] = gt_order[pair_rank[best]]
    return best_iou, best_gt


def match_detections(
    dets: Detections, gt: GroundTruth, num_classes: int, iou_thresholds: Sequence[float]
) -> Tuple[np.ndarray, np.ndarray]:
    """Greedy per-image, per-class matching of section 10 step 2.

    Returns:
        (tp, fp): (T, D) bool each; a detection that is neither (best GT is an ignore box) has
        both False.
    """
    thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1, 1)
    best_iou, best_gt = _best_gt(dets, gt, num_classes)
    has_gt = best_gt >= 0
    best_is_ignore = np.zeros(len(dets), dtype=bool)
    best_is_ignore[has_gt] = gt.ignore[best_gt[has_gt]]
    hits = has_gt & (best_iou >= thresholds)  # (T, D)
    on_ignore = hits & best_is_ignore
    claims = hits & ~on_ignore
    # Within an image, detections claim GT boxes by descending score; the first claim wins.
    order = _score_order(dets.image_ids, dets.scores)
    tp = np.zeros_like(claims)
    for t in range(thresholds.shape[0]):  # a handful of thresholds, not images
        claimers = order[claims[t, order]]
        _, first = np.unique(best_gt[claimers], return_index=True)
        tp[t, claimers[first]] = True
    fp = ~tp & ~on_ignore
    return tp, fp


def _sum_per_class(classes: np.ndarray, weights: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(classes, weights=weights, minlength=num_classes).astype(np.float64)


def ap_and_recall_per_class(
    classes: np.ndarray, scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, num_gt: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """VOC all-point AP and final recall per class (section 10 steps 3-5).

    Args:
        classes, scores: (D,) of the detections; tp, fp: (T, D) bool from :func:`match_detections`;
        num_gt: (C,) non-ignore GT count per class.

    Returns:
        (ap, recall): (T, C) float64 in [0, 1]; NaN for classes with ``num_gt == 0``.
    """
    num_classes = num_gt.size
    order = np.lexsort((-scores, classes))
    cls = classes[order]
    tp = tp[:, order].astype(np.float64)
    fp = fp[:, order].astype(np.float64)
    class_start = np.searchsorted(cls, np.arange(num_classes), side="left")
    group_end = np.ones(cls.size, dtype=bool)  # last detection of a (class, score) tie group
    group_end[:-1] = (cls[1:] != cls[:-1]) | (scores[order][1:] != scores[order][:-1])
    group_of = np.cumsum(group_end) - group_end  # group index of each detection
    ends = np.flatnonzero(group_end)
    cum_tp = np.cumsum(tp, axis=1)
    cum_fp = np.cumsum(fp, axis=1)
    prev = class_start[cls[ends]] - 1  # last index of the previous class, -1 for none
    base_tp = np.where(prev >= 0, cum_tp[:, np.maximum(prev, 0)], 0.0)
    base_fp = np.where(prev >= 0, cum_fp[:, np.maximum(prev, 0)], 0.0)
    tp_end = cum_tp[:, ends] - base_tp
    seen = tp_end + cum_fp[:, ends] - base_fp
    precision = np.divide(tp_end, seen, out=np.zeros_like(tp_end), where=seen > 0)
    # Running max from the right within each class: a class offset larger than any precision
    # stops the maximum from leaking across classes (classes descend in the reversed array).
    offset = 2.0 * (num_classes - cls[ends])
    envelope = np.maximum.accumulate((precision + offset)[:, ::-1], axis=1)[:, ::-1] - offset
    n_gt = np.maximum(num_gt, 1).astype(np.float64)
    # Each TP adds 1 / N_c recall at the envelope precision of its tie group.
    gain = tp * envelope[:, group_of] / n_gt[cls]
    ap = np.stack([_sum_per_class(cls, g, num_classes) for g in gain])
    recall = np.stack([_sum_per_class(cls, t, num_classes) for t in tp]) / n_gt
    no_gt = num_gt == 0
    ap[:, no_gt] = np.nan
    recall[:, no_gt] = np.nan
    return np.clip(ap, 0.0, 1.0, out=ap), recall


def evaluate_detections(
    dets: Detections,
    gt: GroundTruth,
    num_classes: int,
    iou_thresholds: Sequence[float] = (0.4, 0.5, 0.6),
    max_dets_per_image: int = 100,
) -> ClassMetrics:
    """Per-class AP and Recall@``max_dets_per_image`` at each IoU threshold (protocol section 10).

    Detections beyond the ``max_dets_per_image`` best of an image are dropped first.
    """
    thresholds = np.unique(np.asarray(iou_thresholds, dtype=np.float64))
    if thresholds.size == 0 or thresholds.min() <= 0 or thresholds.max() > 1:
        raise ValueError(f"IoU thresholds must lie in (0, 1], got {list(iou_thresholds)}")
    for what, cls in (("detection", dets.classes), ("ground-truth", gt.classes)):
        bad = (cls < 0) | (cls >= num_classes)
        if bad.any():
            raise ValueError(f"{what} class id {int(cls[bad][0])} outside [0, {num_classes})")
    dets = dets.subset(keep_top_k_per_image(dets.image_ids, dets.scores, max_dets_per_image))
    tp, fp = match_detections(dets, gt, num_classes, thresholds)
    num_gt = np.bincount(gt.classes[~gt.ignore], minlength=num_classes)
    ap, recall = ap_and_recall_per_class(dets.classes, dets.scores, tp, fp, num_gt)
    num_dets = np.bincount(dets.classes, minlength=num_classes)
    return ClassMetrics(thresholds, ap, recall, num_gt, num_dets)


def macro_mean(values: np.ndarray, num_gt: np.ndarray) -> float:
    """Mean of (C,) ``values`` over classes with ``num_gt > 0``; NaN when there is none."""
    has_gt = np.asarray(num_gt) > 0
    return float(np.mean(np.asarray(values)[has_gt])) if has_gt.any() else float("nan")


def harmonic_mean(seen: float, unseen: float) -> float:
    """GZSD harmonic mean ``2 S U / (S + U)``; 0 when both are 0, NaN if either is NaN."""
    if np.isnan(seen) or np.isnan(unseen):
        return float("nan")
    return 2.0 * seen * unseen / (seen + unseen) if seen + unseen > 0 else 0.0
