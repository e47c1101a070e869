"""The pipeline's final table: ZSD and GZSD figures of each method side by side."""
import os
from typing import Mapping

from tabulate import tabulate

from ..evaluation.top1_labels import TOP1_IOU, top1_key
from ..utils.io import write_json, write_text

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


# (column header, top-1 group, top-1 outcome): zsdet.evaluation.top1_labels
TOP1_COLUMNS = (
    ("seen: right", "seen", "correct"),
    ("seen: other seen", "seen", "same_group"),
    ("seen: as unseen", "seen", "other_group"),
    ("seen: none", "seen", "absent"),
    ("unseen: right", "unseen", "correct"),
    ("unseen: other unseen", "unseen", "same_group"),
    ("unseen: as seen", "unseen", "other_group"),
    ("unseen: none", "unseen", "absent"),
)


# (column header, key) of the feature-quality block (zsdet.evaluation.feature_quality)
QUALITY_COLUMNS = (
    ("spread ratio", "spread_ratio"),
    ("real-vs-synth probe acc", "real_vs_synth_acc"),
    ("TSTR mAP", "tstr_ap"),
    ("zeros real", "zeros_real"),
    ("zeros synth", "zeros_synth"),
)


def _table(metrics, columns) -> str:
    rows = [[method] + [results.get(group, {}).get(key, float("nan")) for _, group, key in columns]
            for method, results in metrics.items()]
    return tabulate(rows, headers=["method"] + [c[0] for c in columns], floatfmt=".1f",
                    tablefmt="pipe")


def format_results_table(metrics: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Rows: methods (e.g. "synthesis", "baseline"); columns: :data:`COLUMNS`, percentages; below
    it, when GZSD was evaluated, the top-1 labelling table (:data:`TOP1_COLUMNS`, percent of the
    seen / unseen GT objects whose highest-scoring covering detection has that label).

    Args:
        metrics: ``{method: {"zsd": {...}, "gzsd": {...}}}`` as returned by ``ZSDEvaluator``, with an
            optional ``"feature_quality"`` summary per method (printed as a third table).
    """
    table = _table(metrics, COLUMNS)
    top1 = [(header, "gzsd", top1_key(group, outcome)) for header, group, outcome in TOP1_COLUMNS]
    if any(top1[0][2] in results.get("gzsd", {}) for results in metrics.values()):
        table += ("\n\nGZSD top-1 label of each object (% of the seen / unseen objects; "
                  f"highest-scoring detection with IoU >= {TOP1_IOU}):\n" + _table(metrics, top1))
    with_quality = {m: r for m, r in metrics.items() if r.get("feature_quality")}
    if with_quality:
        table += ("\n\nSynthesized vs held-out real seen features (generator/feature_quality.json; spread ratio "
                  "~1 and probe accuracy ~0.5 mean indistinguishable):\n"
                  + tabulate([[m] + [r["feature_quality"].get(k) for _, k in QUALITY_COLUMNS]
                              for m, r in with_quality.items()],
                             headers=["method"] + [h for h, _ in QUALITY_COLUMNS], floatfmt=".3g", tablefmt="pipe"))
    return table


def write_results_report(output_dir: str, metrics: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Print the results table and write it to ``output_dir/results_table.txt``, and ``metrics``
    to ``output_dir/metrics.json`` (the pipeline's and ``tools/evaluate_zsd.py``'s final report).

    Returns the table."""
    table = format_results_table(metrics)
    print(table, flush=True)
    write_text(os.path.join(output_dir, "results_table.txt"), table + "\n")
    write_json(os.path.join(output_dir, "metrics.json"), metrics)
    return table
