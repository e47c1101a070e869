"""``ZSDEvaluator``: zero-shot detection (ZSD) and generalized ZSD (GZSD) evaluation of detectron2
model outputs with the SUZOD protocol (``docs/zsd_protocol.md`` section 10, :mod:`.zsd_metrics`)."""
import copy
import itertools
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm

from ..utils.io import write_json
from .report import ap_key, format_per_class_table, format_summary_table, map_key, plot_per_class, recall_key
from .top1_labels import report_top1_labels
from .zsd_metrics import ClassMetrics, Detections, GroundTruth, evaluate_detections, harmonic_mean, macro_mean

__all__ = ["ZSDEvaluator", "evaluate_and_write", "scored_classes"]

MODES = ("zsd", "gzsd", "seen")
RESULTS_JSON = "zsd_results.json"
PER_CLASS_PNG = "zsd_per_class.png"


class ZSDEvaluator(DatasetEvaluator):
    """Recall@100 at several IoU thresholds and mAP at one IoU, per class and as macro means.

    Modes (``mode``, default: the dataset metadata's ``zsd_mode``):

    * ``"zsd"``: only unseen GT boxes count and only unseen-class detections are scored (seen
      detections are dropped *before* the per-image top-k cut, as if the model scored unseen
      classes only). Returns ``{"zsd": {...}}``.
    * ``"gzsd"``: all GT and all detections; means over seen and over unseen classes and their
      harmonic mean ``2SU/(S+U)``, for mAP and for each recall separately. Returns
      ``{"gzsd": {...}}``.
    * ``"seen"``: like ``"zsd"`` for the seen classes (the seen detector). Returns
      ``{"seen": {...}}``.

    Returned metrics are percentages (0-100), like detectron2's ``COCOEvaluator``, NaN where a
    group has no class with GT. Keys (with ``max_dets_per_image=100``, ``map_iou=0.5``):
    ``recall@100_iou{t}`` for each ``t`` in ``iou_thresholds`` and ``mAP_iou0.5``; in GZSD each
    key is prefixed with ``seen_``, ``unseen_`` and ``hm_``, and GZSD adds the top-1 labelling
    figures ``top1_{seen,unseen}_{correct,same_group,other_group,absent}`` (:mod:`.top1_labels`;
    also written to ``zsd_top1_labels.json`` and ``zsd_top1_confusion.png``).

    The evaluator keeps at most ``max_dets_per_image`` detections per image by score (over all
    scored classes) even if the model returns more. Only images passed to :meth:`process` are
    evaluated (as ``COCOEvaluator`` does). Boxes use detectron2's continuous coordinates
    (``x2 = x + w``), not mmdet v1's "+1" convention. Crowd annotations (``iscrowd=1``) are ignore
    boxes. On the main process, :meth:`evaluate` writes ``zsd_results.json`` (all per-class
    numbers) and ``zsd_per_class.png`` into ``output_dir`` and logs both tables.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        *,
        mode: Optional[str] = None,
        iou_thresholds: Sequence[float] = (0.4, 0.5, 0.6),
        map_iou: float = 0.5,
        max_dets_per_image: int = 100,
        distributed: bool = True,
    ):
        """
        Args:
            dataset_name: a name registered in ``DatasetCatalog`` whose metadata has
                ``thing_classes`` (all classes), ``seen_classes`` and ``unseen_classes``.
            output_dir: where the JSON and PNG go; None writes nothing.
            mode: "zsd", "gzsd" or "seen"; None reads ``zsd_mode`` from the metadata.
            iou_thresholds: IoU thresholds of Recall@max_dets_per_image.
            map_iou: IoU threshold of mAP.
            max_dets_per_image: detections kept per image (top by score).
            distributed: gather predictions from all ranks to rank 0.
        """
        self._logger = logging.getLogger(__name__)
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._recall_ious = tuple(float(t) for t in iou_thresholds)
        self._map_iou = float(map_iou)
        if int(max_dets_per_image) < 1:
            raise ValueError(f"max_dets_per_image must be >= 1, got {max_dets_per_image}")
        self._max_dets = int(max_dets_per_image)
        meta = MetadataCatalog.get(dataset_name)
        self._class_names = list(_meta_attr(meta, dataset_name, "thing_classes"))
        self._is_unseen = _unseen_mask(meta, dataset_name, self._class_names)
        self._mode = mode if mode is not None else _meta_attr(meta, dataset_name, "zsd_mode")
        if self._mode not in MODES:
            raise ValueError(f"ZSDEvaluator mode for {dataset_name!r} must be one of {MODES}, "
                             f"got {self._mode!r}")
        self.reset()

    def reset(self):
        self._predictions: List[Dict] = []

    def process(self, inputs, outputs):
        """Collect, per image, ``instances.pred_boxes`` (XYXY_ABS in original image pixels),
        ``scores`` and ``pred_classes`` (contiguous ids into ``thing_classes``) as numpy arrays;
        ``inputs[i]["image_id"]`` identifies the image."""
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                raise KeyError(f"model output for image {inp.get('image_id')!r} has no 'instances'")
            inst = out["instances"].to("cpu")
            self._predictions.append({
                "image_id": inp["image_id"],
                "boxes": inst.pred_boxes.tensor.numpy().astype(np.float32),
                "scores": inst.scores.numpy().astype(np.float32),
                "classes": inst.pred_classes.numpy().astype(np.int64),
            })

    def evaluate(self):
        """Gather predictions on rank 0 and compute the metrics; other ranks return ``{}``."""
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        if len(predictions) == 0:
            self._logger.warning("[ZSDEvaluator] did not receive any prediction.")
            return {}
        index_of, gt = self._load_ground_truth()
        dets = self._stack_predictions(predictions, index_of)
        image_rows = np.array([index_of[p["image_id"]] for p in predictions], dtype=np.int64)
        if image_rows.size < len(index_of):
            self._logger.warning(
                f"[ZSDEvaluator] {image_rows.size} of {len(index_of)} images of "
                f"{self._dataset_name!r} were processed; evaluating those only.")
        gt = gt.subset(np.isin(gt.image_ids, image_rows))
        return evaluate_and_write(
            gt, dets, class_names=self._class_names, is_unseen=self._is_unseen, mode=self._mode,
            iou_thresholds=self._recall_ious, map_iou=self._map_iou,
            max_dets_per_image=self._max_dets, output_dir=self._output_dir,
            name=self._dataset_name)

    def _load_ground_truth(self):
        """Read the dataset's records: ({image_id: row}, GroundTruth with image_ids = rows)."""
        records = DatasetCatalog.get(self._dataset_name)
        index_of: Dict = {}
        image_rows, boxes, classes, ignore, modes = [], [], [], [], []
        for row, rec in enumerate(records):
            image_id = rec["image_id"]
            if image_id in index_of:
                raise ValueError(f"dataset {self._dataset_name!r} has image_id {image_id!r} twice")
            index_of[image_id] = row
            for ann in rec.get("annotations", []):
                cat = ann["category_id"]
                if not 0 <= cat < len(self._class_names):
                    raise ValueError(
                        f"dataset {self._dataset_name!r}, image "
                        f"{rec.get('file_name', image_id)!r}: category_id {cat} outside "
                        f"thing_classes (0..{len(self._class_names) - 1})")
                image_rows.append(row)
                boxes.append(ann["bbox"])
                modes.append(ann.get("bbox_mode", BoxMode.XYWH_ABS))
                classes.append(cat)
                ignore.append(bool(ann.get("iscrowd", 0)))
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        modes = np.asarray([int(m) for m in modes], dtype=np.int64)
        for mode in np.unique(modes):
            mode = BoxMode(int(mode))
            if mode not in (BoxMode.XYWH_ABS, BoxMode.XYXY_ABS):
                raise ValueError(f"dataset {self._dataset_name!r}: bbox_mode {mode.name} is not "
                                 "supported (use XYWH_ABS or XYXY_ABS)")
            sel = modes == int(mode)
            boxes[sel] = BoxMode.convert(boxes[sel], mode, BoxMode.XYXY_ABS)
        return index_of, GroundTruth(image_rows, boxes, classes, ignore)

    def _stack_predictions(self, predictions: List[Dict], index_of: Dict) -> Detections:
        ids = [p["image_id"] for p in predictions]
        unknown = [i for i in ids if i not in index_of]
        if unknown:
            raise KeyError(f"predictions for image_id(s) {unknown[:5]} not in dataset "
                           f"{self._dataset_name!r}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"an image was processed twice by the ZSDEvaluator of "
                             f"{self._dataset_name!r}; call reset() between evaluations")
        counts = [len(p["scores"]) for p in predictions]
        dets = Detections(
            image_ids=np.repeat([index_of[i] for i in ids], counts),
            boxes=np.concatenate([p["boxes"] for p in predictions]),
            scores=np.concatenate([p["scores"] for p in predictions]),
            classes=np.concatenate([p["classes"] for p in predictions]),
        )
        bad = (dets.classes < 0) | (dets.classes >= len(self._class_names))
        if bad.any():
            raise ValueError(f"predicted class id {int(dets.classes[bad][0])} outside "
                             f"thing_classes of {self._dataset_name!r} "
                             f"(0..{len(self._class_names) - 1})")
        return dets


def scored_classes(is_unseen: np.ndarray, mode: str) -> np.ndarray:
    """(C,) bool: classes whose GT and detections enter the evaluation in ``mode``."""
    if mode == "zsd":
        return is_unseen.copy()
    if mode == "seen":
        return ~is_unseen
    return np.ones_like(is_unseen)


def evaluate_and_write(
    gt: GroundTruth,
    dets: Detections,
    *,
    class_names: Sequence[str],
    is_unseen: np.ndarray,
    mode: str,
    iou_thresholds: Sequence[float] = (0.4, 0.5, 0.6),
    map_iou: float = 0.5,
    max_dets_per_image: int = 100,
    output_dir: Optional[str] = None,
    name: str = "",
) -> Dict[str, Dict[str, float]]:
    """The one code path from test-set GT and detections to ZSD / GZSD figures, shared by
    :class:`ZSDEvaluator` and ``tools/evaluate_zsd.py``.

    Keeps the GT and detections of the classes ``mode`` scores (:func:`scored_classes`; seen
    detections leave before the per-image top-k cut in ZSD mode), computes the per-class metrics
    (:func:`.zsd_metrics.evaluate_detections`), logs the per-class and summary tables and, with
    an ``output_dir``, writes ``zsd_results.json`` and ``zsd_per_class.png`` there.

    Args:
        gt, dets: the test set's GT and detections; ``image_ids`` index images, ``classes`` index
            ``class_names``.
        class_names: (C,) all classes; is_unseen: (C,) bool.
        mode: "zsd", "gzsd" or "seen" (see :class:`ZSDEvaluator`).
        iou_thresholds: of Recall@max_dets_per_image; map_iou: of mAP.
        output_dir: where the JSON and PNG go; None writes nothing.
        name: the test set's name in the log, the JSON and the chart title.

    Returns:
        ``{mode: {metric: percent}}`` with the keys described in :class:`ZSDEvaluator`.
    """
    if mode not in MODES:
        raise ValueError(f"ZSD evaluation mode must be one of {MODES}, got {mode!r}")
    is_unseen = np.asarray(is_unseen, dtype=bool)
    recall_ious = tuple(float(t) for t in iou_thresholds)
    map_iou = float(map_iou)
    scored = scored_classes(is_unseen, mode)
    dets = dets.subset(scored[dets.classes])
    gt = gt.subset(scored[gt.classes])
    metrics = evaluate_detections(dets, gt, len(class_names), recall_ious + (map_iou,),
                                  max_dets_per_image)
    summary = _summarize(metrics, is_unseen, mode, recall_ious, map_iou, max_dets_per_image)
    records = _per_class_records(metrics, class_names, is_unseen, scored, recall_ious, map_iou,
                                 max_dets_per_image)
    columns = [ap_key(map_iou)] + [recall_key(max_dets_per_image, t) for t in recall_ious]
    logger = logging.getLogger(__name__)
    logger.info(f"ZSD evaluation ({mode}) of {name}, per class (%):\n"
                + format_per_class_table(records, columns))
    logger.info(f"ZSD evaluation ({mode}) of {name} (%):\n" + format_summary_table(summary))
    if output_dir is not None:
        write_json(os.path.join(output_dir, RESULTS_JSON), {
            "dataset": name,
            "mode": mode,
            "max_dets_per_image": max_dets_per_image,
            "recall_iou_thresholds": list(recall_ious),
            "map_iou": map_iou,
            "units": "percent",
            "summary": summary,
            "per_class": records,
        })
        plot_per_class(os.path.join(output_dir, PER_CLASS_PNG), records, columns,
                       title=f"{name} ({mode}); unseen classes in red")
    flat = summary[mode] if mode != "gzsd" else {
        f"{group}_{k}": v for group, row in summary.items() for k, v in row.items()}
    if mode == "gzsd":  # the label a person sees on each object (top1_labels module docstring)
        flat.update(report_top1_labels(dets, gt, class_names, is_unseen, max_dets_per_image,
                                       output_dir, name))
    return {mode: copy.deepcopy(flat)}


def _summarize(metrics: ClassMetrics, is_unseen: np.ndarray, mode: str, recall_ious, map_iou: float,
               max_dets: int) -> Dict[str, Dict[str, float]]:
    """{group: {metric: percent}} with groups (mode,) or ("seen", "unseen", "hm") for GZSD."""
    def means(class_mask):
        num_gt = np.where(class_mask, metrics.num_gt, 0)
        row = {map_key(map_iou): 100 * macro_mean(metrics.ap[metrics.row(map_iou)], num_gt)}
        for t in recall_ious:
            row[recall_key(max_dets, t)] = 100 * macro_mean(metrics.recall[metrics.row(t)], num_gt)
        return row

    if mode != "gzsd":
        return {mode: means(scored_classes(is_unseen, mode))}
    seen, unseen = means(~is_unseen), means(is_unseen)
    hm = {k: harmonic_mean(seen[k], unseen[k]) for k in seen}
    return {"seen": seen, "unseen": unseen, "hm": hm}


def _per_class_records(metrics: ClassMetrics, class_names: Sequence[str], is_unseen: np.ndarray,
                       scored: np.ndarray, recall_ious, map_iou: float, max_dets: int) -> List[Dict]:
    """One record per scored class (``report`` module format), metrics in percent."""
    records = []
    for c in np.flatnonzero(scored):
        rec = {"class": class_names[c],
               "split": "unseen" if is_unseen[c] else "seen",
               "num_gt": int(metrics.num_gt[c]),
               "num_detections": int(metrics.num_detections[c]),
               ap_key(map_iou): 100 * float(metrics.ap[metrics.row(map_iou), c])}
        for t in recall_ious:
            rec[recall_key(max_dets, t)] = 100 * float(metrics.recall[metrics.row(t), c])
        records.append(rec)
    return records


def _meta_attr(meta, dataset_name: str, key: str):
    if not hasattr(meta, key):
        raise KeyError(f"MetadataCatalog[{dataset_name!r}] has no {key!r}, needed by ZSDEvaluator")
    return getattr(meta, key)


def _unseen_mask(meta, dataset_name: str, class_names: List[str]) -> np.ndarray:
    """(C,) bool, True for unseen classes; seen_classes and unseen_classes must partition
    thing_classes."""
    seen = list(_meta_attr(meta, dataset_name, "seen_classes"))
    unseen = list(_meta_attr(meta, dataset_name, "unseen_classes"))
    known = set(class_names)
    for key, names in (("seen_classes", seen), ("unseen_classes", unseen)):
        missing = [n for n in names if n not in known]
        if missing:
            raise KeyError(f"{dataset_name!r}: {key} name(s) {missing} not in thing_classes")
    both = sorted(set(seen) & set(unseen))
    if both:
        raise ValueError(f"{dataset_name!r}: class(es) {both} are both seen and unseen")
    neither = [n for n in class_names if n not in set(seen) | set(unseen)]
    if neither:
        raise ValueError(f"{dataset_name!r}: thing_classes {neither} are neither seen nor unseen")
    unseen_set = set(unseen)
    return np.array([n in unseen_set for n in class_names], dtype=bool)
