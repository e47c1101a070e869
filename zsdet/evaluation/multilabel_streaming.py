"""Multi-label metrics of a score matrix too large for memory, computed exactly from a stream.

A :class:`ScoreStream` produces the (n_images, n_classes) scores and labels on demand, in row
chunks of a column range (e.g. a linear head applied to features streamed from disk).
:func:`streamed_multilabel_metrics` gives the same per-label AP and F1 / P / R at top-K as
:func:`~zsdet.evaluation.average_precision_per_label` and :func:`~zsdet.evaluation.f1_at_k` on
the whole matrix (the same functions run on its pieces), holding at most ``memory_mb``:

* F1@K pass: row chunks over all C classes; each chunk's top-K hits are counted and summed.
* AP passes: one per block of classes; the block's (n, c) scores and labels are filled from row
  chunks and the per-label AP of each column is computed (columns are independent).

Memory is O(n * c + m * C) instead of O(n * C); the price is ``ceil(C / c) + 1`` passes over the
stream. Every entry count is sized with the per-entry costs below (measured with tracemalloc).
"""
import logging
from typing import Dict, Iterator, Optional, Protocol, Sequence, Tuple

import numpy as np

from .multilabel import average_precision_per_label, f1_from_counts, top_k_true_positives

__all__ = ["ScoreStream", "streamed_multilabel_metrics", "min_memory_mb", "CHUNK_ENTRY_BYTES"]

logger = logging.getLogger(__name__)

# Bytes per entry of one streamed chunk: its float32 score and int8 label, the top-K sort and
# input checks (13 B measured), and up to 14 B of the stream's own temporaries.
CHUNK_ENTRY_BYTES = 32
# Bytes per entry of a held class block: float32 score + int8 label.
BLOCK_ENTRY_BYTES = 5
# Temporaries of average_precision_per_label per entry of its input (73.7 B measured).
AP_ENTRY_BYTES = 80


class ScoreStream(Protocol):
    """Scores and {-1, 0, 1} labels of ``num_images`` images for ``num_classes`` classes."""

    num_images: int
    num_classes: int

    def iter_rows(self, columns: slice, max_rows: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """``(scores (m, c) float32, labels (m, c) int8)`` of the classes ``columns`` (c of them)
        for consecutive images, m <= ``max_rows``, in a fixed image order covering every image once.
        Temporaries of a chunk: at most 14 bytes per entry (see ``CHUNK_ENTRY_BYTES``)."""


def streamed_multilabel_metrics(stream: ScoreStream, *, ks: Sequence[int], convention: str = "standard",
                                ignore_zero: Optional[bool] = None, memory_mb: float = 256.0
                                ) -> Tuple[np.ndarray, Dict[int, Tuple[float, float, float]]]:
    """Per-label AP and F1 / P / R at each K of the stream's whole score matrix (module docstring).

    Args:
        stream: the scores and labels, see :class:`ScoreStream`.
        ks: the K values of F1@K; convention, ignore_zero: see
            :func:`~zsdet.evaluation.average_precision_per_label`.
        memory_mb: MiB of scores, labels and metric temporaries held at once (the stream's own
            buffers, e.g. a file reader's, come on top).

    Returns:
        ``(ap (C,) float64, {k: (f1, precision, recall)})``, as the in-memory functions give.

    Raises:
        ValueError: the budget is below one class column of n images or one row of C classes,
            the stream yields a wrong number of rows, or the metric functions' errors.
    """
    n, C = stream.num_images, stream.num_classes
    budget = int(memory_mb * 2 ** 20)
    if memory_mb < min_memory_mb(n, C):
        raise ValueError(f"evaluation memory budget {memory_mb} MiB is below the {min_memory_mb(n, C):.3g} "
                         f"MiB of one class column of {n} images or one image row of {C} classes")
    f1 = _f1_pass(stream, ks, rows=budget // (C * CHUNK_ENTRY_BYTES)) if len(ks) else {}
    # the held block and its fill chunks, or the block and its AP temporaries, share the budget
    ap_cols = max(1, budget // 2 // (n * AP_ENTRY_BYTES))
    block_cols = min(C, max(1, (budget - ap_cols * n * AP_ENTRY_BYTES) // (n * BLOCK_ENTRY_BYTES)))
    ap_cols = min(ap_cols, block_cols)
    fill_rows = max(1, (budget - block_cols * n * BLOCK_ENTRY_BYTES) // (block_cols * CHUNK_ENTRY_BYTES))
    logger.info("streamed evaluation of %d images x %d classes within %.1f MiB: %d row pass(es) of "
                "%d-class blocks", n, C, memory_mb, -(-C // block_cols) + 1, block_cols)
    scores = np.empty((n, block_cols), np.float32)
    labels = np.empty((n, block_cols), np.int8)
    ap = []
    for first in range(0, C, block_cols):
        cols = slice(first, min(first + block_cols, C))
        width = cols.stop - cols.start
        _fill(stream, cols, fill_rows, scores[:, :width], labels[:, :width])
        ap += [average_precision_per_label(scores[:, j:min(j + ap_cols, width)],
                                           labels[:, j:min(j + ap_cols, width)],
                                           convention=convention, ignore_zero=ignore_zero)
               for j in range(0, width, ap_cols)]
    return np.concatenate(ap), f1


def min_memory_mb(num_images: int, num_classes: int) -> float:
    """The smallest ``memory_mb`` of :func:`streamed_multilabel_metrics` for this matrix size."""
    return max(num_images * (BLOCK_ENTRY_BYTES + AP_ENTRY_BYTES), num_classes * CHUNK_ENTRY_BYTES) / 2 ** 20


def _f1_pass(stream: ScoreStream, ks: Sequence[int], rows: int) -> Dict[int, Tuple[float, float, float]]:
    """F1 / P / R at each K from the top-K hits of row chunks of all classes."""
    tp, num_pos, seen = np.zeros(len(ks), np.int64), 0, 0
    for s, y in stream.iter_rows(slice(0, stream.num_classes), rows):
        hits, pos = top_k_true_positives(s, y, ks)
        tp, num_pos, seen = tp + hits, num_pos + pos, _check_rows(stream, seen, len(s))
    _check_rows(stream, seen, 0, last=True)
    return {int(k): f1_from_counts(t, num_pos, seen * min(int(k), stream.num_classes))
            for k, t in zip(ks, tp)}


def _fill(stream: ScoreStream, columns: slice, rows: int, scores: np.ndarray, labels: np.ndarray) -> None:
    """Write the scores / labels of ``columns`` for every image into ``scores`` / ``labels`` (n, c)."""
    seen = 0
    for s, y in stream.iter_rows(columns, rows):
        end = _check_rows(stream, seen, len(s))
        scores[seen:end], labels[seen:end] = s, y
        seen = end
    _check_rows(stream, seen, 0, last=True)


def _check_rows(stream: ScoreStream, seen: int, new: int, last: bool = False) -> int:
    """``seen + new`` rows so far, or ``ValueError`` when that passes (or, at the ``last``, misses)
    the stream's image count."""
    if seen + new > stream.num_images or (last and seen != stream.num_images):
        raise ValueError(f"the score stream yielded {seen + new}{'' if last else '+'} rows for "
                         f"{stream.num_images} images")
    return seen + new
