"""``MultiLabelEvaluator``: mAP and F1 / P / R at top-K of a multi-label image classifier."""
import copy
import itertools
import logging
import os
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from .multilabel import as_numpy, average_precision_per_label, f1_at_k, mean_of_label_aps
from ..utils.io import write_json
from .report import format_summary_table

__all__ = ["MultiLabelEvaluator", "report_multilabel", "per_label_ap_percent"]

logger = logging.getLogger(__name__)


class MultiLabelEvaluator(DatasetEvaluator):
    """Collects ``(scores, labels)`` per image and reports mAP and F1@K, P@K, R@K (percent, 0-100).

    ``process(inputs, outputs)``: ``inputs`` is a list of per-image dicts with
    ``inputs[i][label_key]`` of shape (C,) in {-1, 0, 1}; ``outputs`` is a (B, C) score tensor or a
    list of per-image dicts with ``outputs[i][score_key]`` of shape (C,).

    ``evaluate()`` returns ``{task: {"mAP": .., "F1@3": .., "P@3": .., "R@3": .., ...}}`` with one
    F1/P/R triple per K in ``ks``, computed by :func:`~zsdet.evaluation.mean_average_precision`
    (with ``convention`` / ``ignore_zero``) and :func:`~zsdet.evaluation.f1_at_k`. With
    ``output_dir`` it also writes ``<task>_results.json`` (``multilabel_results.json``) holding
    the per-label AP (null for labels without positive under the standard convention).
    """

    def __init__(
        self,
        output_dir: Optional[str] = None,
        *,
        ks: Sequence[int] = (3, 5),
        convention: str = "standard",
        ignore_zero: Optional[bool] = None,
        task: str = "multilabel",
        label_key: str = "labels",
        score_key: str = "scores",
        class_names: Optional[Sequence[str]] = None,
        distributed: bool = True,
    ):
        """
        Args:
            output_dir: where the JSON goes; None writes nothing.
            ks: the K values of F1@K (the paper: 3 and 5 for NUS-WIDE, 10 and 20 for Open Images).
            convention, ignore_zero: passed to :func:`average_precision_per_label`.
            task: the key of the returned dict (e.g. "zsl" / "gzsl" for two evaluators).
            label_key, score_key: where labels and scores are found in inputs / outputs.
            class_names: optional names of the C labels, used in the JSON.
            distributed: gather from all ranks to rank 0 (other ranks return ``{}``).
        """
        self._output_dir = output_dir
        self._ks = tuple(int(k) for k in ks)
        self._convention = convention
        self._ignore_zero = ignore_zero
        self._task = task
        self._label_key = label_key
        self._score_key = score_key
        self._class_names = list(class_names) if class_names is not None else None
        self._distributed = distributed
        self.reset()

    def reset(self):
        self._scores, self._labels = [], []

    def process(self, inputs, outputs):
        if isinstance(outputs, (list, tuple)):
            scores = np.stack([as_numpy(o[self._score_key]) for o in outputs])
        else:
            scores = as_numpy(outputs)
        labels = np.stack([as_numpy(i[self._label_key]) for i in inputs])
        if scores.shape != labels.shape:
            raise ValueError(f"{self._task}: scores {scores.shape} and labels {labels.shape} "
                             "of a batch differ in shape")
        self._scores.append(scores.astype(np.float32))
        self._labels.append(labels.astype(np.int8))

    def evaluate(self):
        scores, labels = self._scores, self._labels
        if self._distributed:
            comm.synchronize()
            scores = list(itertools.chain(*comm.gather(scores, dst=0)))
            labels = list(itertools.chain(*comm.gather(labels, dst=0)))
            if not comm.is_main_process():
                return {}
        if not scores:
            logger.warning(f"[MultiLabelEvaluator] {self._task}: no prediction received.")
            return {}
        scores, labels = np.concatenate(scores), np.concatenate(labels)
        ap = average_precision_per_label(scores, labels, convention=self._convention,
                                         ignore_zero=self._ignore_zero)
        f1 = {k: f1_at_k(scores, labels, k) for k in self._ks}
        result = report_multilabel(self._task, ap, f1, num_images=scores.shape[0],
                                   convention=self._convention, output_dir=self._output_dir,
                                   class_names=self._class_names)
        return {self._task: copy.deepcopy(result)}


def per_label_ap_percent(ap: np.ndarray, class_names: Optional[Sequence[str]] = None
                         ) -> Dict[str, Optional[float]]:
    """Class name (default: the index as a string) -> AP in percent, None for NaN (no positive).

    Raises:
        ValueError: ``class_names`` does not have one name per entry of ``ap`` (C,).
    """
    names = list(class_names) if class_names is not None else [str(c) for c in range(ap.size)]
    if len(names) != ap.size:
        raise ValueError(f"{len(names)} class_names for {ap.size} labels")
    return {n: None if np.isnan(a) else 100 * float(a) for n, a in zip(names, ap)}


def report_multilabel(task: str, ap: np.ndarray, f1_by_k: Mapping[int, Tuple[float, float, float]], *,
                      num_images: int, convention: str, output_dir: Optional[str] = None,
                      class_names: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """The summary (percent) of one task: ``{"mAP", "F1@k", "P@k", "R@k" for each k}``.

    Args:
        ap: (C,) per-label AP in [0, 1] (NaN: no positive), from :func:`average_precision_per_label`.
        f1_by_k: K -> ``(f1, precision, recall)`` in [0, 1], e.g. from :func:`f1_at_k`.
        num_images, convention: for the log line.
        output_dir: where ``<task>_results.json`` (summary + per-label AP) goes; None writes nothing.
        class_names: names of the C labels in the JSON (default: indices).

    Logs the summary as a table.
    """
    result = {"mAP": 100 * mean_of_label_aps(ap)}
    for k, (f1, p, r) in f1_by_k.items():
        result.update({f"F1@{k}": 100 * f1, f"P@{k}": 100 * p, f"R@{k}": 100 * r})
    logger.info(f"{task} ({num_images} images, {ap.size} labels, {convention} AP convention), %:\n"
                + format_summary_table({task: result}))
    if output_dir is not None:
        write_json(os.path.join(output_dir, f"{task}_results.json"), {
            "task": task, "convention": convention, "units": "percent", "summary": result,
            "per_label_AP": per_label_ap_percent(ap, class_names),
        })
    return result
