"""The pipeline's final table: ZSD and GZSD figures of each method side by side."""
from typing import Mapping

from tabulate import tabulate

# (column header, result group, metric key)
COLUMNS = (
    ("ZSD R@100 .4", "zsd", "recall@100_iou0.4"),
    ("ZSD R@100 .5", "zsd", "recall@100_iou0.5"),
    ("ZSD R@100 .6", "zsd", "recall@100_iou0.6"),
    ("ZSD mAP .5", "zsd", "mAP_iou0.5"),
    ("GZSD R S", "gzsd", "seen_recall@100_iou0.5"),
    ("GZSD R U", "gzsd", "unseen_recall@100_iou0.5"),
    ("GZSD R HM", "gzsd", "hm_recall@100_iou0.5"),
    ("GZSD mAP S", "gzsd", "seen_mAP_iou0.5"),
    ("GZSD mAP U", "gzsd", "unseen_mAP_iou0.5"),
    ("GZSD mAP HM", "gzsd", "hm_mAP_iou0.5"),
)


def format_results_table(metrics: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Rows: methods (e.g. "synthesis", "baseline"); columns: :data:`COLUMNS`, percentages.

    Args:
        metrics: ``{method: {"zsd": {...}, "gzsd": {...}}}`` as returned by ``ZSDEvaluator``.
    """
    rows = [[method] + [results.get(group, {}).get(key, float("nan")) for _, group, key in COLUMNS]
            for method, results in metrics.items()]
    return tabulate(rows, headers=["method"] + [c[0] for c in COLUMNS], floatfmt=".1f",
                    tablefmt="pipe")
