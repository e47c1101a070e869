"""``MultiLabelEvaluator``: mAP and F1 / P / R at top-K of a multi-label image classifier."""
import copy
import itertools
import logging
import os
from typing import Optional, Sequence

import numpy as np
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from .multilabel import as_numpy, average_precision_per_label, f1_at_k, mean_of_label_aps
from .report import format_summary_table, write_json

__all__ = ["MultiLabelEvaluator"]

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
        self._logger = logging.getLogger(__name__)
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
            self._logger.warning(f"[MultiLabelEvaluator] {self._task}: no prediction received.")
            return {}
        scores, labels = np.concatenate(scores), np.concatenate(labels)
        ap = average_precision_per_label(scores, labels, convention=self._convention,
                                         ignore_zero=self._ignore_zero)
        result = {"mAP": 100 * mean_of_label_aps(ap)}
        for k in self._ks:
            f1, p, r = f1_at_k(scores, labels, k)
            result.update({f"F1@{k}": 100 * f1, f"P@{k}": 100 * p, f"R@{k}": 100 * r})
        self._logger.info(f"{self._task} ({scores.shape[0]} images, {scores.shape[1]} labels, "
                          f"{self._convention} AP convention), %:\n"
                          + format_summary_table({self._task: result}))
        if self._output_dir is not None:
            names = self._class_names or [str(c) for c in range(ap.size)]
            if len(names) != ap.size:
                raise ValueError(f"{self._task}: {len(names)} class_names for {ap.size} labels")
            write_json(os.path.join(self._output_dir, f"{self._task}_results.json"), {
                "task": self._task, "convention": self._convention, "units": "percent",
                "summary": result,
                "per_label_AP": {n: 100 * float(a) for n, a in zip(names, ap)},
            })
        return {self._task: copy.deepcopy(result)}
