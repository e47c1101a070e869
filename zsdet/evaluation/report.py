"""Presentation of evaluation results: metric key names, tables, per-class bar charts, and the
classification benchmarks' results table and per-label AP-change chart.

Per-class results travel as "records": one dict per class with the keys ``class``, ``split``
("seen" / "unseen"), ``num_gt``, ``num_detections`` and one float (or None for classes without
GT) per metric column, e.g. ``AP_iou0.5`` and ``recall@100_iou0.4``.
"""
import math
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from tabulate import tabulate

from ..utils.io import write_figure

__all__ = ["ap_key", "map_key", "recall_key", "format_summary_table", "format_per_class_table",
           "plot_per_class", "format_results_table", "plot_ap_change"]

UNSEEN_COLOR = "tab:red"
BAR_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:gray")


def ap_key(iou: float) -> str:
    """Column name of AP at one IoU threshold, e.g. ``AP_iou0.5``."""
    return f"AP_iou{iou:g}"


def map_key(iou: float) -> str:
    """Summary name of the class-mean AP at one IoU threshold, e.g. ``mAP_iou0.5``."""
    return f"mAP_iou{iou:g}"


def recall_key(max_dets: int, iou: float) -> str:
    """Column name of Recall@max_dets at one IoU threshold, e.g. ``recall@100_iou0.4``."""
    return f"recall@{max_dets}_iou{iou:g}"


def _fmt(value) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "-" if missing else f"{value:.2f}"


def format_summary_table(summary: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table with one row per group (e.g. ``zsd`` or ``seen`` / ``unseen`` / ``hm``) and
    one column per metric; ``summary[group][metric]`` in percent."""
    groups = list(summary)
    metrics = list(summary[groups[0]]) if groups else []
    rows = [[g] + [_fmt(summary[g][m]) for m in metrics] for g in groups]
    return tabulate(rows, headers=["group"] + metrics, tablefmt="pipe", disable_numparse=True)


def format_per_class_table(records: Sequence[Mapping], columns: Sequence[str]) -> str:
    """Markdown table of per-class ``records`` (values in percent) for the metric ``columns``."""
    rows = [[r["class"], r["split"], r["num_gt"], r["num_detections"]]
            + [_fmt(r[c]) for c in columns] for r in records]
    headers = ["class", "split", "#GT", "#det"] + list(columns)
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)


def plot_per_class(path: str, records: Sequence[Mapping], columns: Sequence[str],
                   title: Optional[str] = None) -> None:
    """Save a grouped bar chart (PNG) of the metric ``columns`` (percent) of each class with GT.

    Unseen classes have red names and a light red background. Uses matplotlib's Agg canvas
    directly, so the global backend is left untouched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown: List[Dict] = [r for r in records if r["num_gt"] > 0]
    n, m = len(shown), len(columns)
    fig = Figure(figsize=(max(6.0, 0.2 * n * max(m, 1) + 3), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(m, 1)
    for j, col in enumerate(columns):
        xs = [i + (j - (m - 1) / 2) * width for i in range(n)]
        ax.bar(xs, [r[col] or 0.0 for r in shown], width=width, label=col,
               color=BAR_COLORS[j % len(BAR_COLORS)])
    ax.set_xticks(range(n))
    ax.set_xticklabels([r["class"] for r in shown], rotation=90, fontsize=8)
    for tick, r in zip(ax.get_xticklabels(), shown):
        if r["split"] == "unseen":
            tick.set_color(UNSEEN_COLOR)
            ax.axvspan(tick.get_position()[0] - 0.5, tick.get_position()[0] + 0.5,
                       color=UNSEEN_COLOR, alpha=0.08, lw=0)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    ax.set_title(title or "per-class results (unseen classes in red)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    write_figure(path, fig)


def format_results_table(metrics: Dict[str, Dict[str, float]], ks) -> str:
    """The paper's layout (Table 2): a row per task, then P, R, F1 for each K, then mAP (percent)."""
    headers = ["Task"] + [f"{m}@{k}" for k in ks for m in ("P", "R", "F1")] + ["mAP"]
    rows = [[task.upper()] + [values[f"{m}@{k}"] for k in ks for m in ("P", "R", "F1")]
            + [values["mAP"]] for task, values in metrics.items()]
    return tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".1f")


def plot_ap_change(path: str, ours: Dict[str, Optional[float]], baseline: Dict[str, Optional[float]],
                   top_n: int, title: str) -> int:
    """Bar chart (PNG) of per-label AP change vs a baseline, as the paper's Fig. 4: the ``top_n``
    labels with the largest gains and the ``top_n`` with the largest drops.

    Returns:
        the number of labels compared (present with an AP in both runs).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [n for n, v in ours.items() if v is not None and baseline.get(n) is not None]
    if not names:
        raise ValueError(f"no label has an AP in both this run and the baseline (plot {path})")
    diff = np.array([ours[n] - baseline[n] for n in names])
    order = np.argsort(-diff, kind="stable")
    shown = order if len(order) <= 2 * top_n else np.concatenate([order[:top_n], order[-top_n:]])
    fig = Figure(figsize=(max(6.0, 0.3 * len(shown) + 1.5), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(np.arange(len(shown)), diff[shown], color=np.where(diff[shown] >= 0, "tab:green", "tab:red"))
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(shown)))
    ax.set_xticklabels([names[i] for i in shown], rotation=90, fontsize=8)
    ax.set_ylabel("AP change (percentage points)")
    ax.set_title(f"{title}: better on {int((diff > 0).sum())} of {len(names)} labels")
    fig.tight_layout()
    write_figure(path, fig)
    return len(names)
