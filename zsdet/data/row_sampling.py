"""Per-class caps on rows: how many rows of each label a sample keeps, and which."""
import numpy as np

__all__ = ["balanced_rows", "class_cap"]


def class_cap(counts: np.ndarray, total: int) -> int:
    """The largest per-class cap q with ``sum(min(counts, q)) <= total`` (``counts.max()`` if all fit)."""
    c = np.sort(counts[counts > 0])
    if c.sum() <= total:
        return int(c.max()) if len(c) else 0
    below = np.concatenate([[0], np.cumsum(c)[:-1]])  # rows of the smaller classes, taken whole
    caps = (total - below) // (len(c) - np.arange(len(c)))
    return int(caps[np.argmax(caps < c)])  # the first class the cap cuts


def balanced_rows(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``per_class`` random row indices of each label value (all rows of rarer labels)."""
    order = rng.permutation(len(labels))
    ranked = labels[order]
    # rank of each row within its label, computed by a stable sort instead of a loop over labels
    by_label = np.argsort(ranked, kind="stable")
    sorted_labels = ranked[by_label]
    first = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.empty(len(labels), dtype=np.int64)
    rank[by_label] = np.arange(len(labels)) - first
    return np.sort(order[rank < per_class])
