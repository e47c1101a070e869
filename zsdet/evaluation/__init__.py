"""zsdet evaluation: multi-label classification metrics and the zero-shot detection evaluator.

* :mod:`.multilabel`: per-label AP, mAP, F1 / P / R at top-K (numpy or torch inputs).
* :mod:`.multilabel_evaluator`: :class:`MultiLabelEvaluator`, a ``DatasetEvaluator`` for them.
* :mod:`.zsd_metrics`: pure numpy ZSD protocol functions (matching, VOC AP, Recall@100, HM).
* :mod:`.zsd_evaluator`: :class:`ZSDEvaluator`, the ``DatasetEvaluator`` for ZSD / GZSD.
* :mod:`.report`: tables, JSON and per-class bar charts.

Nothing is registered globally; a trainer picks ``ZSDEvaluator`` for ``evaluator_type == "zsd"``.
"""
from .multilabel import average_precision_per_label, f1_at_k, mean_average_precision
from .multilabel_evaluator import MultiLabelEvaluator
from .zsd_evaluator import ZSDEvaluator
from .zsd_metrics import (
    ClassMetrics,
    Detections,
    GroundTruth,
    evaluate_detections,
    harmonic_mean,
    macro_mean,
)

__all__ = [
    "average_precision_per_label",
    "mean_average_precision",
    "f1_at_k",
    "MultiLabelEvaluator",
    "ZSDEvaluator",
    "ClassMetrics",
    "Detections",
    "GroundTruth",
    "evaluate_detections",
    "harmonic_mean",
    "macro_mean",
]
