"""Streamed multi-label metrics: exactly the in-memory functions' values, whatever the blocking."""
import numpy as np
import pytest

from zsdet.evaluation import (average_precision_per_label, f1_at_k, streamed_multilabel_metrics,
                              top_k_true_positives)
from zsdet.evaluation.multilabel_streaming import AP_ENTRY_BYTES, BLOCK_ENTRY_BYTES


class ArrayStream:
    """A ScoreStream over in-memory arrays; records the requested column ranges and chunk sizes."""

    def __init__(self, scores, labels):
        self.scores, self.labels = scores, labels
        self.num_images, self.num_classes = scores.shape
        self.calls = []

    def iter_rows(self, columns, max_rows):
        self.calls.append((columns.start, columns.stop, max_rows))
        for i in range(0, len(self.scores), max_rows):
            yield self.scores[i:i + max_rows, columns], self.labels[i:i + max_rows, columns]


def random_case(n, C, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 20, size=(n, C)).astype(np.float32)  # many ties
    labels = rng.choice(np.array([-1, 0, 1], np.int8), size=(n, C), p=[0.6, 0.2, 0.2])
    labels[:, 3] = -1  # a label without positive
    return scores, labels


@pytest.mark.parametrize("convention, ignore_zero", [("standard", False), ("standard", True), ("official", None)])
def test_streamed_equals_in_memory_across_class_blocks(convention, ignore_zero):
    n, C = 200, 37
    scores, labels = random_case(n, C, seed=1)
    # room for AP temporaries of one column + a block of 9: 5 class blocks, chunked fills
    memory_mb = n * (AP_ENTRY_BYTES + 9 * BLOCK_ENTRY_BYTES) / 2 ** 20
    stream = ArrayStream(scores, labels)
    ap, f1 = streamed_multilabel_metrics(stream, ks=(1, 5, 50), convention=convention,
                                         ignore_zero=ignore_zero, memory_mb=memory_mb)
    expected = average_precision_per_label(scores, labels, convention=convention, ignore_zero=ignore_zero)
    np.testing.assert_allclose(ap, expected, rtol=1e-12)  # same function, same columns (NaN too)
    for k in (1, 5, 50):
        assert f1[k] == f1_at_k(scores, labels, k)
    blocks = sorted({(a, b) for a, b, _ in stream.calls[1:]})
    assert stream.calls[0][:2] == (0, C)  # the F1 pass
    assert all(max_rows < n for _, _, max_rows in stream.calls)  # every pass in row chunks
    assert len(blocks) == 5 and blocks[0][0] == 0 and blocks[-1][1] == C
    assert all(b == a2 for (_, b), (a2, _) in zip(blocks, blocks[1:]))  # contiguous, no overlap


def test_top_k_counts_sum_over_row_chunks():
    scores, labels = random_case(60, 9, seed=2)
    parts = [top_k_true_positives(scores[i:i + 7], labels[i:i + 7], (2, 4)) for i in range(0, 60, 7)]
    tp, num_pos = sum(p[0] for p in parts), sum(p[1] for p in parts)
    for k, t in zip((2, 4), tp):
        f1, precision, recall = f1_at_k(scores, labels, k)
        assert (precision, recall) == pytest.approx((t / (60 * k), t / num_pos))


def test_budget_and_row_count_errors():
    scores, labels = random_case(100, 8, seed=3)
    with pytest.raises(ValueError, match="MiB of one class column of 100 images"):
        streamed_multilabel_metrics(ArrayStream(scores, labels), ks=(3,), memory_mb=0.001)
    stream = ArrayStream(scores, labels)
    stream.num_images = 99  # the stream yields one row more than it announces
    with pytest.raises(ValueError, match=r"yielded 100\+ rows for 99 images"):
        streamed_multilabel_metrics(stream, ks=(3,))
