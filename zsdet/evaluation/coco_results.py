"""COCO-format ground truth and detection results, read into the arrays of :mod:`.zsd_metrics`.

This is how ``tools/evaluate_zsd.py`` scores the detections of any detector (detectron2's
``COCOEvaluator``, mmdetection and pycocotools all write the same results json) with the ZSD /
GZSD protocol of :func:`.zsd_evaluator.evaluate_and_write`.

* **Classes**: the seen and unseen classes of a class split (:func:`~zsdet.data.datasets.coco_zsd.
  load_class_split`: ``coco65_15``, ``coco48_17`` or a split file), in category-id order, one
  index space for both modes. Classes of the GT json in neither group (e.g. the 15 leftover
  classes of 48/17) are not evaluated: their GT boxes are left out and their detections counted.
* **Test images** (protocol): images with at least one annotation of an unseen class (any, crowd
  included, as mmdet's filter and ``prepare_coco_zsd.py`` do), or every image of the json
  (``all_images``).
* **GT**: annotations of the split's classes on the test images; ``iscrowd=1`` boxes are ignore
  regions; boxes with ``w < 1``, ``h < 1`` or ``area <= 0`` are left out (mmdet skips them). In ZSD
  mode the evaluator keeps the unseen boxes only.
* **Detections**: ``{image_id, category_id, bbox: [x, y, w, h], score}`` rows, parsed column-wise
  (no per-row Python logic: about a second per million rows). A category id that is not in the GT
  json is an error (a results file for another label space, e.g. 0-based or contiguous ids);
  detections on images outside the GT json or outside the test images, and of classes outside
  the split, are counted (:class:`ResultCounts`) and left out.
"""
import operator
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence, Tuple

import numpy as np

from ..data.zsd_split import ZeroShotSplit
from .zsd_metrics import Detections, GroundTruth

__all__ = ["CocoTestSet", "ResultCounts", "load_coco_test_set", "load_coco_results"]


@dataclass
class CocoTestSet:
    """The evaluated images and their GT.

    Attributes:
        image_ids: (I,) sorted COCO ids of the test images; GT / detection ``image_ids`` are rows
            into it.
        all_image_ids: (J,) sorted ids of every image of the GT json.
        class_names: (C,) the split's classes in category-id order; category_ids: (C,) their ids.
        is_unseen: (C,) bool.
        json_category_ids: (K,) sorted ids of every category of the GT json (K >= C).
        gt: GT boxes (XYXY) of the test images, classes in ``0..C-1``.
    """

    image_ids: np.ndarray
    all_image_ids: np.ndarray
    class_names: Tuple[str, ...]
    category_ids: np.ndarray
    is_unseen: np.ndarray
    json_category_ids: np.ndarray
    gt: GroundTruth


@dataclass
class ResultCounts:
    """Detections of a results file: read, and left out for each reason (disjoint)."""

    total: int = 0
    image_not_in_gt: int = 0
    not_a_test_image: int = 0
    class_outside_split: int = 0

    @property
    def evaluated(self) -> int:
        return self.total - self.image_not_in_gt - self.not_a_test_image - self.class_outside_split

    def as_dict(self) -> dict:
        return {**asdict(self), "evaluated": self.evaluated}


def _column(rows: Sequence[Mapping], key: str, dtype, source: str) -> np.ndarray:
    """``[row[key] for row in rows]`` as an array, built by ``map`` in C (no per-row Python code)."""
    try:
        values = list(map(operator.itemgetter(key), rows))
    except (KeyError, TypeError, IndexError):
        bad = next(i for i, r in enumerate(rows) if not isinstance(r, Mapping) or key not in r)
        raise ValueError(f"{source}: entry {bad} has no {key!r} ({str(rows[bad])[:120]})") from None
    try:
        return np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {key!r} values must be numbers{' x 4' if key == 'bbox' else ''} "
                         f"({e})") from None


def _xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def load_coco_test_set(coco: Mapping, class_split: ZeroShotSplit, *, all_images: bool = False,
                       source: str = "ground truth") -> CocoTestSet:
    """Test images and GT of a COCO instances dict (module docstring).

    Args:
        coco: the GT json (``images``, ``annotations``, ``categories``).
        class_split: seen and unseen class names, all present in ``coco["categories"]``.
        all_images: evaluate every image of the json instead of the protocol's test images.
        source: the file's name, for error messages.
    """
    if not isinstance(coco, Mapping) or not all(k in coco for k in ("images", "annotations",
                                                                     "categories")):
        raise ValueError(f"{source}: expected a COCO json with 'images', 'annotations' and "
                         "'categories'")
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    json_category_ids = np.array([c["id"] for c in categories], dtype=np.int64)
    in_split = set(class_split.seen) | set(class_split.unseen)
    split_cats = [c for c in categories if c["name"] in in_split]
    missing = sorted(in_split - {c["name"] for c in split_cats})
    if missing:
        raise KeyError(f"{source}: the split's classes {missing} are not in its categories")
    class_names = tuple(c["name"] for c in split_cats)
    category_ids = np.array([c["id"] for c in split_cats], dtype=np.int64)
    unseen = set(class_split.unseen)
    is_unseen = np.array([n in unseen for n in class_names], dtype=bool)

    all_image_ids = np.unique(_column(coco["images"], "id", np.int64, f"{source} images"))
    anns = coco["annotations"]
    ann_image = _column(anns, "image_id", np.int64, f"{source} annotations")
    ann_cat = _column(anns, "category_id", np.int64, f"{source} annotations")
    boxes = _column(anns, "bbox", np.float64, f"{source} annotations").reshape(-1, 4)
    area = np.fromiter(map(operator.methodcaller("get", "area", 1.0), anns), np.float64, len(anns))
    crowd = np.fromiter(map(operator.methodcaller("get", "iscrowd", 0), anns), np.int64, len(anns)) > 0
    unknown = np.setdiff1d(ann_cat, json_category_ids)
    if unknown.size:
        raise KeyError(f"{source}: annotations use category ids {unknown[:5].tolist()} missing "
                       "from its 'categories'")
    cls_pos = np.searchsorted(category_ids, ann_cat).clip(max=max(len(category_ids) - 1, 0))
    is_split = category_ids[cls_pos] == ann_cat
    is_unseen_ann = is_split & is_unseen[cls_pos]
    image_ids = all_image_ids if all_images else np.unique(ann_image[is_unseen_ann])
    image_ids = np.intersect1d(image_ids, all_image_ids)
    valid = (boxes[:, 2] >= 1) & (boxes[:, 3] >= 1) & (area > 0)
    keep = is_split & valid & np.isin(ann_image, image_ids)
    gt = GroundTruth(np.searchsorted(image_ids, ann_image[keep]), _xywh_to_xyxy(boxes[keep]),
                     cls_pos[keep], crowd[keep])
    return CocoTestSet(image_ids, all_image_ids, class_names, category_ids, is_unseen,
                       json_category_ids, gt)


def load_coco_results(results: Any, test_set: CocoTestSet,
                      source: str = "results") -> Tuple[Detections, ResultCounts]:
    """Detections of a COCO results list on ``test_set``'s images and classes.

    Returns:
        (detections with ``image_ids`` = rows of ``test_set.image_ids`` and ``classes`` into
        ``test_set.class_names``, the counts of :class:`ResultCounts`).
    Raises:
        ValueError: not a list of result rows, a missing key, a non-numeric or non-finite box or
            score (row named); KeyError: category ids that are not in the GT json.
    """
    if not isinstance(results, list):
        raise ValueError(f"{source}: expected a COCO results list [{{image_id, category_id, bbox, "
                         f"score}}, ...], got {type(results).__name__}")
    image = _column(results, "image_id", np.int64, source)
    category = _column(results, "category_id", np.int64, source)
    score = _column(results, "score", np.float64, source)
    boxes = _column(results, "bbox", np.float64, source)
    if not results:
        boxes = boxes.reshape(0, 4)
    if boxes.shape != (len(results), 4):
        raise ValueError(f"{source}: every 'bbox' must be [x, y, w, h], got an array of shape "
                         f"{boxes.shape}")
    for what, bad in (("bbox", ~np.isfinite(boxes).all(1)), ("score", ~np.isfinite(score))):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{source}: {int(bad.sum())} detection(s) have a NaN or infinite "
                             f"{what}, first entry {row}: {results[row]}")
    unknown = np.setdiff1d(category, test_set.json_category_ids)
    if unknown.size:
        raise KeyError(
            f"{source}: category ids {unknown[:10].tolist()} are not in the ground truth's "
            f"categories ({test_set.json_category_ids[:5].tolist()}...): results of another label "
            "space (0-based or contiguous ids instead of the json's category ids?)")
    in_json = np.isin(image, test_set.all_image_ids)
    is_test = np.isin(image, test_set.image_ids)
    cls_pos = np.searchsorted(test_set.category_ids, category).clip(
        max=max(len(test_set.category_ids) - 1, 0))
    in_split = test_set.category_ids[cls_pos] == category
    counts = ResultCounts(total=len(results), image_not_in_gt=int((~in_json).sum()),
                          not_a_test_image=int((in_json & ~is_test).sum()),
                          class_outside_split=int((is_test & ~in_split).sum()))
    keep = is_test & in_split
    dets = Detections(np.searchsorted(test_set.image_ids, image[keep]),
                      _xywh_to_xyxy(boxes[keep]), score[keep], cls_pos[keep])
    return dets, counts
