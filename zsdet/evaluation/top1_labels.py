"""Top-1 labelling of GZSD: which label does each ground-truth object get, if any?

Recall@100 and AP count an object as found when *some* detection of its class covers it, so one
box labelled both "green circle" (seen) and "green triangle" (unseen) scores for both classes.
This figure asks what a person looking at the picture sees: for every non-crowd GT object, the
highest-scoring detection (any class) with IoU >= ``iou_threshold`` is its *top-1 label*, and the
label is

* ``correct``: the object's class;
* ``same_group``: another class of the same group (seen object labelled as another seen class,
  unseen as another unseen class);
* ``other_group``: a class of the other group (seen object labelled unseen, or the reverse);
* ``absent``: no detection reaches the IoU threshold.

Conventions:

* Detections are first cut to the ``max_dets_per_image`` best of each image, as in
  :func:`.zsd_metrics.evaluate_detections`, so both figures see the same detections.
* Ties: among detections of equal score the one with the higher IoU wins; equal score and IoU go
  to the earlier detection row (detectron2 outputs are sorted by score, so the one it lists first).
* A detection may be the top-1 label of several objects (it is not consumed, unlike AP matching).
* Crowd / ignore GT boxes are not objects: they are neither counted nor do they block anything.

:func:`top1_labels` returns a :class:`Top1Labels` (a class x class confusion matrix);
:meth:`Top1Labels.summary` gives the percentages written into ``metrics.json`` under
:func:`top1_key` names; :func:`plot_top1_confusion` draws the matrix.
"""
import logging
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from detectron2.structures.boxes import Boxes, matched_pairwise_iou

from ..utils.io import write_figure, write_json
from .report import UNSEEN_COLOR, format_summary_table
from .zsd_metrics import Detections, GroundTruth, keep_top_k_per_image

__all__ = ["OUTCOMES", "GROUPS", "TOP1_IOU", "top1_key", "Top1Labels", "top1_classes",
           "top1_labels", "plot_top1_confusion", "report_top1_labels"]

OUTCOMES = ("correct", "same_group", "other_group", "absent")
GROUPS = ("seen", "unseen")
TOP1_IOU = 0.5  # smallest IoU of a detection that labels an object
TOP1_JSON = "zsd_top1_labels.json"
TOP1_PNG = "zsd_top1_confusion.png"
MAX_PAIRS = 1 << 20  # (detection, GT) pairs whose IoU is computed at once: ~100 MB at most


def top1_key(group: str, outcome: str) -> str:
    """Name of one summary figure, e.g. ``top1_unseen_other_group`` (percent of the unseen
    objects whose top-1 label is a seen class)."""
    return f"top1_{group}_{outcome}"


@dataclass
class Top1Labels:
    """confusion: (C, C + 1) int, objects of GT class i (rows) whose top-1 label is class j
    (columns), the last column counting objects without one; is_unseen: (C,) bool;
    iou_threshold: the smallest IoU of a labelling detection."""

    confusion: np.ndarray
    is_unseen: np.ndarray
    iou_threshold: float = TOP1_IOU

    def outcome_counts(self) -> np.ndarray:
        """(2, 4) int: objects per group (:data:`GROUPS`) and outcome (:data:`OUTCOMES`)."""
        num_classes = self.is_unseen.size
        labelled = self.confusion[:, :num_classes]
        same = self.is_unseen[:, None] == self.is_unseen[None, :]  # (C, C) label in object's group
        correct = np.diag(labelled)
        same_group = (labelled * same).sum(axis=1) - correct
        other_group = (labelled * ~same).sum(axis=1)
        absent = self.confusion[:, num_classes]
        per_class = np.stack([correct, same_group, other_group, absent], axis=1)
        return np.stack([per_class[~self.is_unseen].sum(0), per_class[self.is_unseen].sum(0)])

    def summary(self) -> Dict[str, float]:
        """``{top1_key(group, outcome): percent of that group's objects}``; the four outcomes of a
        group add up to 100, NaN for a group without objects."""
        counts = self.outcome_counts().astype(np.float64)
        totals = counts.sum(axis=1, keepdims=True)
        percent = np.divide(100 * counts, totals, out=np.full_like(counts, np.nan),
                            where=totals > 0)
        return {top1_key(g, o): float(percent[i, j])
                for i, g in enumerate(GROUPS) for j, o in enumerate(OUTCOMES)}

    def num_objects(self) -> Dict[str, int]:
        """Non-crowd GT objects per group."""
        return dict(zip(GROUPS, self.outcome_counts().sum(axis=1).tolist()))


def _gt_chunks(counts: np.ndarray, max_pairs: int):
    """Consecutive GT ranges [start, stop) with at most ``max_pairs`` pairs each (a GT with more
    detections than that forms its own range)."""
    ends = np.cumsum(counts)
    start = 0
    while start < counts.size:
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + max_pairs, side="right")), start + 1)
        yield start, stop
        start = stop


def top1_classes(dets: Detections, gt: GroundTruth, iou_threshold: float = TOP1_IOU,
                 max_pairs: int = MAX_PAIRS) -> np.ndarray:
    """(G,) int: class of the top-1 detection of each GT box (module conventions), -1 where no
    detection of its image has IoU >= ``iou_threshold``. Crowd boxes get a label too; callers
    drop them. Pairs are formed per GT with the detections of its image, ``max_pairs`` at a time.
    """
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"IoU threshold must lie in (0, 1], got {iou_threshold}")
    det_order = np.argsort(dets.image_ids, kind="stable")  # by image, then input row
    det_images = dets.image_ids[det_order]
    lo = np.searchsorted(det_images, gt.image_ids, side="left")
    counts = np.searchsorted(det_images, gt.image_ids, side="right") - lo
    labels = np.full(gt.image_ids.size, -1, dtype=np.int64)
    for start, stop in _gt_chunks(counts, max_pairs):
        n = counts[start:stop]
        pair_gt = np.repeat(np.arange(start, stop), n)
        offset = np.arange(pair_gt.size) - np.repeat(np.cumsum(n) - n, n)
        pair_det = det_order[np.repeat(lo[start:stop], n) + offset]
        iou = matched_pairwise_iou(Boxes(torch.from_numpy(dets.boxes[pair_det])),
                                   Boxes(torch.from_numpy(gt.boxes[pair_gt]))).numpy()
        hit = np.nan_to_num(iou, nan=0.0) >= iou_threshold
        pair_gt, pair_det, iou = pair_gt[hit], pair_det[hit], iou[hit]
        # Per GT: highest score, then highest IoU, then earliest detection row.
        best = np.lexsort((pair_det, -iou, -dets.scores[pair_det], pair_gt))
        first = np.ones(best.size, dtype=bool)
        first[1:] = pair_gt[best][1:] != pair_gt[best][:-1]
        labels[pair_gt[best[first]]] = dets.classes[pair_det[best[first]]]
    return labels


def top1_labels(dets: Detections, gt: GroundTruth, is_unseen: np.ndarray,
                iou_threshold: float = TOP1_IOU, max_dets_per_image: int = 100) -> Top1Labels:
    """Top-1 label of every non-crowd GT object, counted as a class x class confusion matrix.

    Args:
        dets, gt: detections and GT of a test set (all classes, as in GZSD).
        is_unseen: (C,) bool, True for unseen classes.
        iou_threshold: smallest IoU of a detection that labels an object.
        max_dets_per_image: detections kept per image (by score) before labelling.
    """
    is_unseen = np.asarray(is_unseen, dtype=bool).reshape(-1)
    num_classes = is_unseen.size
    for what, cls in (("detection", dets.classes), ("ground-truth", gt.classes)):
        bad = (cls < 0) | (cls >= num_classes)
        if bad.any():
            raise ValueError(f"{what} class id {int(cls[bad][0])} outside [0, {num_classes})")
    dets = dets.subset(keep_top_k_per_image(dets.image_ids, dets.scores, max_dets_per_image))
    objects = gt.subset(~gt.ignore)
    labels = top1_classes(dets, objects, iou_threshold)
    columns = np.where(labels >= 0, labels, num_classes)
    confusion = np.bincount(objects.classes * (num_classes + 1) + columns,
                            minlength=num_classes * (num_classes + 1))
    return Top1Labels(confusion.reshape(num_classes, num_classes + 1), is_unseen, iou_threshold)


def plot_top1_confusion(path: str, top1: Top1Labels, class_names: Sequence[str],
                        title: Optional[str] = None) -> None:
    """Save the confusion matrix as a PNG: rows GT classes, columns top-1 labels plus "none",
    cells the percent of the row's objects (number printed when non-zero), unseen class names
    in red, a line between the groups. Uses matplotlib's Agg canvas (global backend untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Seen classes first, then unseen: the off-diagonal blocks are the cross-group confusions.
    order = np.concatenate([np.flatnonzero(~top1.is_unseen), np.flatnonzero(top1.is_unseen)])
    has_objects = top1.confusion.sum(axis=1)[order] > 0
    rows = order[has_objects]
    counts = top1.confusion[rows][:, np.append(order, len(class_names))]
    percent = 100.0 * counts / counts.sum(axis=1, keepdims=True)
    names = [class_names[c] for c in order] + ["none"]
    n_rows, n_cols = percent.shape
    fig = Figure(figsize=(0.42 * n_cols + 3, 0.36 * n_rows + 2.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(percent, cmap="Blues", vmin=0, vmax=100, aspect="auto")
    for i, j in zip(*np.nonzero(counts)):
        ax.text(j, i, f"{percent[i, j]:.0f}", ha="center", va="center", fontsize=7,
                color="white" if percent[i, j] > 50 else "black")
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels(names, rotation=90, fontsize=8)
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([class_names[c] for c in rows], fontsize=8)
    for labels, classes in ((ax.get_xticklabels(), order), (ax.get_yticklabels(), rows)):
        for label, c in zip(labels, classes):
            if top1.is_unseen[c]:
                label.set_color(UNSEEN_COLOR)
    n_seen_rows, n_seen_cols = int((~top1.is_unseen[rows]).sum()), int((~top1.is_unseen).sum())
    ax.axhline(n_seen_rows - 0.5, color="gray", lw=1)
    ax.axvline(n_seen_cols - 0.5, color="gray", lw=1)
    ax.axvline(len(order) - 0.5, color="gray", lw=1)
    ax.set_xlabel(f"top-1 label (highest-scoring detection with IoU >= {top1.iou_threshold:g})")
    ax.set_ylabel("ground-truth class")
    ax.set_title(title or "top-1 label of each object, % of the row (unseen classes in red)",
                 fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    fig.tight_layout()
    write_figure(path, fig)


def report_top1_labels(dets: Detections, gt: GroundTruth, class_names: Sequence[str],
                       is_unseen: np.ndarray, max_dets_per_image: int = 100,
                       output_dir: Optional[str] = None, name: str = "") -> Dict[str, float]:
    """GZSD top-1 labelling of a test set: logs the seen / unseen table and, with an
    ``output_dir``, writes ``zsd_top1_labels.json`` (counts and confusion matrix) and
    ``zsd_top1_confusion.png`` there. Returns :meth:`Top1Labels.summary` (percentages)."""
    top1 = top1_labels(dets, gt, is_unseen, TOP1_IOU, max_dets_per_image)
    summary = top1.summary()
    table = {g: {o: summary[top1_key(g, o)] for o in OUTCOMES} for g in GROUPS}
    logging.getLogger(__name__).info(
        f"GZSD top-1 label of each object of {name} (IoU >= {TOP1_IOU}), % of the group's "
        f"objects {top1.num_objects()}:\n" + format_summary_table(table))
    if output_dir is not None:
        counts = top1.outcome_counts()
        write_json(os.path.join(output_dir, TOP1_JSON), {
            "dataset": name,
            "iou_threshold": TOP1_IOU,
            "max_dets_per_image": max_dets_per_image,
            "summary_percent": summary,
            "counts": {g: dict(zip(OUTCOMES, counts[i].tolist())) for i, g in enumerate(GROUPS)},
            "classes": list(class_names),
            "unseen_classes": [c for c, u in zip(class_names, top1.is_unseen) if u],
            "confusion": top1.confusion.tolist(),
            "confusion_columns": "classes, then objects without a top-1 label",
        })
        plot_top1_confusion(os.path.join(output_dir, TOP1_PNG), top1, class_names,
                            title=f"{name}: top-1 label of each object, % of the row "
                                  "(unseen classes in red)")
    return summary
