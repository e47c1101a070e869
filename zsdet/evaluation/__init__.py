"""zsdet evaluation: multi-label classification metrics and the zero-shot detection evaluator.

* :mod:`.multilabel`: per-label AP, mAP, F1 / P / R at top-K (numpy or torch inputs).
* :mod:`.multilabel_evaluator`: :class:`MultiLabelEvaluator`, a ``DatasetEvaluator`` for them, and
  :func:`report_multilabel` (summary table + JSON).
* :mod:`.multilabel_streaming`: :func:`streamed_multilabel_metrics`, the same metrics computed
  exactly from a :class:`ScoreStream` within a memory budget (score matrices too large for memory).
* :mod:`.zsd_metrics`: pure numpy ZSD protocol functions (matching, VOC AP, Recall@100, HM).
* :mod:`.head_scores`: :class:`HeadScores`, a linear head's scores on a streamed feature file.
* :mod:`.zsd_evaluator`: :class:`ZSDEvaluator`, the ``DatasetEvaluator`` for ZSD / GZSD, with
  :mod:`.top1_labels` (GZSD top-1 labelling) and :mod:`.coco_results` (COCO-format results files).
* :mod:`.report`: tables and plots.

Nothing is registered globally; a trainer picks ``ZSDEvaluator`` for ``evaluator_type == "zsd"``.
"""
from .multilabel import (
    average_precision_per_label,
    f1_at_k,
    f1_from_counts,
    mean_average_precision,
    top_k_true_positives,
)
from .multilabel_evaluator import MultiLabelEvaluator, per_label_ap_percent, report_multilabel
from .multilabel_streaming import ScoreStream, min_memory_mb, streamed_multilabel_metrics
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
    "top_k_true_positives",
    "f1_from_counts",
    "MultiLabelEvaluator",
    "report_multilabel",
    "per_label_ap_percent",
    "ScoreStream",
    "streamed_multilabel_metrics",
    "min_memory_mb",
    "ZSDEvaluator",
    "ClassMetrics",
    "Detections",
    "GroundTruth",
    "evaluate_detections",
    "harmonic_mean",
    "macro_mean",
]
