"""How far synthesized features are from real ones: the figures of the feature-quality report.

All functions take features in the data's units, ``(n, d)`` float tensors, and label sets as
``(n, C)`` multi-hot tensors (one class per row for detection RoIs). The report compares held-out
real features with synthesized features for the *same* label sets, one synthesized row per real row:

* ``spread_ratio``: within-condition spread of the synthesized rows over that of the real rows, a
  geometric mean over the conditions (distinct label sets) that have at least two real rows; the
  spread of a condition is the RMS distance of its rows to their mean. About 1 is right, near 0
  is a collapsed generator (features that ignore the noise), far above 1 is over-dispersion.
* ``real_vs_synth_acc``: balanced accuracy of a linear probe told to separate real from synthesized
  rows (standardised features, ridge least squares on +-1 targets, two folds): 0.5 when they
  cannot be told apart, 1 when they are linearly separable.
* ``zeros_real`` / ``zeros_synth``: share of exactly-zero values (post-ReLU box features have many).
* ``tstr_ap``: "train on synthesized, test on real": mAP (percent in the report; classes with a real positive) of
  a ridge probe (:func:`ridge_probe_scores`) fitted on synthesized rows and scored on real held-out
  rows. With real background rows, the probe gets a background column, a row's class score is its
  class output minus its background output (class against background, as the box classifier
  decides), and held-out background rows are negatives of every class: features that cannot be
  told from background lose score. A ranking measure does not see a common offset of all
  synthesized features (the real-vs-synthesized probe does) nor a collapse around the right class
  means (the spread ratio does); the three figures are complementary.
"""
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch

from ..utils.io import write_figure
from .multilabel import mean_average_precision

__all__ = ["FeatureQuality", "spread_ratio", "condition_spreads", "real_vs_synthetic_accuracy", "zero_share",
           "value_histogram", "tstr_map", "ridge_probe_scores", "plot_feature_quality", "QUALITY_KEYS"]

QUALITY_KEYS = ("spread_ratio", "real_vs_synth_acc", "tstr_ap", "zeros_real", "zeros_synth")
HISTOGRAM_BINS = 40
PROBE_RIDGE = 1e-2  # relative ridge of the real-vs-synthesized probe (standardised features)


@dataclass
class FeatureQuality:
    """The report's figures (module docstring) and the data of its figure."""

    spread_ratio: float
    real_vs_synth_acc: float
    tstr_ap: float
    zeros_real: float
    zeros_synth: float
    num_real: int
    histogram: Dict[str, List[float]] = field(default_factory=dict)
    condition_spread: Dict[str, List[float]] = field(default_factory=dict)

    def summary(self) -> Dict[str, float]:
        """The scalar figures (``QUALITY_KEYS`` and ``num_real``)."""
        return {k: v for k, v in asdict(self).items() if not isinstance(v, dict)}


def ridge_probe_scores(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                       ridge: float) -> torch.Tensor:
    """Scores (m, K) of the ridge-regression linear head fitted on ``(train_x (n, d), train_y (n, K))``.

    ``W = argmin ||X_c W - Y_c||^2 + lam ||W||^2`` on centred data, ``lam = ridge * trace(X_c^T X_c) / d``,
    solved in closed form (dual form, an (n, n) system, when n < d) in float64.
    """
    x, y, t = train_x.double(), train_y.double(), test_x.double()
    mean = x.mean(0)
    x, y = x - mean, y - y.mean(0)
    lam = ridge * (x * x).sum() / x.shape[1] + 1e-12
    if len(x) < x.shape[1]:
        w = x.T @ torch.linalg.solve(x @ x.T + lam * torch.eye(len(x), dtype=x.dtype, device=x.device), y)
    else:
        w = torch.linalg.solve(x.T @ x + lam * torch.eye(x.shape[1], dtype=x.dtype, device=x.device), x.T @ y)
    return ((t - mean) @ w).float()


def condition_spreads(x: torch.Tensor, condition: torch.Tensor, num_conditions: int) -> torch.Tensor:
    """(num_conditions,) RMS distance of the rows of each condition to their mean; NaN below 2 rows.

    Args:
        x: (n, d) features; condition: (n,) int64 condition id of each row.
    """
    x = x.double()
    counts = torch.bincount(condition, minlength=num_conditions).double()
    means = x.new_zeros(num_conditions, x.shape[1]).index_add_(0, condition, x) / counts.clamp(min=1)[:, None]
    sq = ((x - means[condition]) ** 2).sum(1)
    mean_sq = x.new_zeros(num_conditions).index_add_(0, condition, sq) / counts.clamp(min=1)
    return torch.where(counts >= 2, mean_sq.sqrt(), torch.full_like(mean_sq, float("nan")))


def spread_ratio(real_x: torch.Tensor, synth_x: torch.Tensor, labels: torch.Tensor):
    """(geometric-mean ratio, per-condition ratios (k,), their label sets (k, C)) of the synthesized
    over the real within-condition spread; rows of ``real_x`` and ``synth_x`` share ``labels`` (n, C)."""
    sets, condition = torch.unique(labels.gt(0), dim=0, return_inverse=True)
    real = condition_spreads(real_x, condition, len(sets))
    synth = condition_spreads(synth_x, condition, len(sets))
    valid = torch.isfinite(real) & (real > 0) & torch.isfinite(synth)
    ratios = synth[valid] / real[valid]
    if not len(ratios):
        return float("nan"), ratios.float(), sets[valid]
    return float(torch.exp(torch.log(ratios.clamp(min=1e-12)).mean())), ratios.float(), sets[valid]


def real_vs_synthetic_accuracy(real_x: torch.Tensor, synth_x: torch.Tensor, seed: int = 0) -> float:
    """Balanced accuracy of a linear real-vs-synthesized probe, mean of two folds (module docstring).

    The larger set is subsampled to the size of the smaller one (at least 4 rows each)."""
    n = min(len(real_x), len(synth_x))
    if n < 4:
        raise ValueError(f"real-vs-synthesized probe needs at least 4 rows of each, got {len(real_x)} / {len(synth_x)}")
    gen = torch.Generator().manual_seed(seed)
    real = real_x[torch.randperm(len(real_x), generator=gen)[:n]].double()
    synth = synth_x[torch.randperm(len(synth_x), generator=gen)[:n]].double()
    x = torch.cat([real, synth])
    target = torch.cat([torch.ones(n), -torch.ones(n)]).double()
    fold = torch.randperm(2 * n, generator=gen) % 2
    accuracies = []
    for k in (0, 1):
        train, test = fold != k, fold == k
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        pred = ridge_probe_scores((x[train] - mean) / std, target[train, None], (x[test] - mean) / std, PROBE_RIDGE)[:, 0]
        truth = target[test] > 0
        hit_real = (pred[truth] > 0).double().mean()
        hit_synth = (pred[~truth] <= 0).double().mean()
        accuracies.append(float((hit_real + hit_synth) / 2))
    return float(np.mean(accuracies))


def zero_share(x: torch.Tensor) -> float:
    """Share of exactly-zero values of ``x``."""
    return float((x == 0).double().mean())


def value_histogram(real_x: torch.Tensor, synth_x: torch.Tensor, bins: int = HISTOGRAM_BINS) -> Dict[str, List[float]]:
    """Shares of the non-zero values of both sets in ``bins`` equal bins up to the real 99.9th
    percentile (values above it in the last bin); exact zeros are the reports' ``zeros_*``."""
    real, synth = real_x.flatten().float(), synth_x.flatten().float()
    top = float(torch.quantile(real[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:1 << 20]],
                               0.999)) if len(real) else 1.0
    top = top if top > 0 else 1.0
    edges = torch.linspace(0, top, bins + 1)

    def shares(v):
        v = v[v != 0].clamp(max=top)
        counts = torch.histc(v, bins=bins, min=0, max=top) if len(v) else torch.zeros(bins)
        return (counts / max(len(v), 1)).tolist()
    return {"edges": edges.tolist(), "real": shares(real), "synth": shares(synth)}


def tstr_map(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
             ridge: float = 0.1, background_train: Optional[torch.Tensor] = None,
             background_test: Optional[torch.Tensor] = None) -> float:
    """"Train on synthesized, test on real" mAP in [0, 1] (module docstring).

    Args:
        train_x, train_y: (n, d) synthesized rows and (n, K) their labels.
        test_x, test_y: (m, d) real held-out rows and (m, K) their labels.
        background_train, background_test: optional real background rows (an extra probe column;
            held-out background rows are negatives of every class).
    """
    if background_train is not None and len(background_train):
        train_x = torch.cat([train_x, background_train.to(train_x)])
        train_y = torch.cat([torch.cat([train_y, train_y.new_zeros(len(train_y), 1)], 1),
                             torch.cat([train_y.new_zeros(len(background_train), train_y.shape[1]),
                                        train_y.new_ones(len(background_train), 1)], 1)])
    if background_test is not None and len(background_test):
        test_x = torch.cat([test_x, background_test.to(test_x)])
        test_y = torch.cat([test_y, test_y.new_zeros(len(background_test), test_y.shape[1])])
    scores = ridge_probe_scores(train_x, train_y, test_x, ridge)
    k = test_y.shape[1]
    if scores.shape[1] > k:  # class against background, as a softmax box classifier decides
        scores = scores[:, :k] - scores[:, k:]
    return mean_average_precision(scores.cpu(), test_y.gt(0).float().cpu())


def plot_feature_quality(report: FeatureQuality, path: str, title: str = "") -> None:
    """Figure of a report (atomically to ``path``): value histograms of real and synthesized
    features (with the zero shares), and the per-condition spread ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_h, ax_s) = plt.subplots(1, 2, figsize=(11, 3.8))
    edges = np.asarray(report.histogram.get("edges", [0, 1]))
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    for key, color in (("real", "tab:blue"), ("synth", "tab:orange")):
        share = np.asarray(report.histogram.get(key, np.zeros(len(centers))))
        zeros = report.zeros_real if key == "real" else report.zeros_synth
        ax_h.bar(centers, share, width, alpha=0.5, color=color, label=f"{key} (exact zeros {100 * zeros:.0f}%)")
    ax_h.set_yscale("log")
    ax_h.set_xlabel("non-zero feature value (data units)")
    ax_h.set_ylabel("share of non-zero values")
    ax_h.legend(fontsize=8)
    ratios = np.sort(np.asarray(report.condition_spread.get("ratio", [])))
    ax_s.bar(np.arange(len(ratios)), ratios, color="tab:green")
    ax_s.axhline(1.0, color="k", lw=0.8)
    ax_s.set_yscale("log")
    ax_s.set_xlabel("label set (sorted)")
    ax_s.set_ylabel("spread synthesized / real")
    ax_s.set_title(f"spread ratio {report.spread_ratio:.2f}, real-vs-synth probe {report.real_vs_synth_acc:.2f}, "
                   f"TSTR mAP {report.tstr_ap:.1f}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    write_figure(path, fig, dpi=110)
    plt.close(fig)
