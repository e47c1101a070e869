"""Multi-label metrics vs hand-computed cases and a brute-force reference."""
import numpy as np
import pytest
import torch

from zsdet.evaluation import average_precision_per_label, f1_at_k, mean_average_precision


def brute_force_ap(scores, labels, ignore_zero):
    """AP of each column: sum over distinct thresholds of (R_t - R_{t-1}) * P_t, with loops."""
    aps = []
    for c in range(scores.shape[1]):
        s, y = scores[:, c], labels[:, c]
        if ignore_zero:
            s, y = s[y != 0], y[y != 0]
        pos = y == 1
        if pos.sum() == 0:
            aps.append(np.nan)
            continue
        ap, prev_recall = 0.0, 0.0
        for t in sorted(set(s.tolist()), reverse=True):
            predicted = s >= t
            recall = (predicted & pos).sum() / pos.sum()
            precision = (predicted & pos).sum() / predicted.sum()
            ap += (recall - prev_recall) * precision
            prev_recall = recall
        aps.append(ap)
    return np.array(aps)


def test_ap_hand_computed_without_ties():
    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    labels = np.array([[1], [0], [1], [0]])
    # positives at ranks 1 and 3: (1/1 + 2/3) / 2
    assert average_precision_per_label(scores, labels)[0] == pytest.approx(5 / 6)


def test_ties_form_one_threshold_whatever_the_row_order():
    scores = np.full((4, 1), 0.5)
    labels = np.array([[1], [0], [1], [0]])
    # one threshold: P = 2/4 at R = 1 -> AP 0.5 (optimistic order would give 1, pessimistic 5/12)
    assert average_precision_per_label(scores, labels)[0] == pytest.approx(0.5)
    assert average_precision_per_label(scores, labels[::-1])[0] == pytest.approx(0.5)
    scores = np.array([[0.9], [0.5], [0.5]])
    for labels in ([[0], [1], [0]], [[0], [0], [1]]):
        assert average_precision_per_label(scores, np.array(labels))[0] == pytest.approx(1 / 3)


def test_label_without_positive_skipped_in_standard_zero_in_official():
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    labels = np.array([[1, -1], [-1, -1], [1, -1], [-1, -1]])
    ap = average_precision_per_label(scores, labels)
    assert ap[0] == pytest.approx(5 / 6) and np.isnan(ap[1])
    assert mean_average_precision(scores, labels) == pytest.approx(5 / 6)
    official = average_precision_per_label(scores, labels, convention="official")
    np.testing.assert_allclose(official, [5 / 6, 0.0])
    assert mean_average_precision(scores, labels, convention="official") == pytest.approx(5 / 12)


def test_signed_labels_zero_is_negative_or_ignored():
    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    labels = np.array([[-1], [0], [1], [-1]])
    assert mean_average_precision(scores, labels) == pytest.approx(1 / 3)  # 0 = negative
    assert mean_average_precision(scores, labels, ignore_zero=True) == pytest.approx(1 / 2)
    assert mean_average_precision(scores, labels, convention="official") == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="official"):
        mean_average_precision(scores, labels, convention="official", ignore_zero=False)


@pytest.mark.parametrize("ignore_zero", [False, True])
def test_ap_matches_brute_force_on_random_tied_scores(ignore_zero):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(40, 9)).astype(float)  # many ties
    labels = rng.choice([-1, 0, 1], size=(40, 9), p=[0.5, 0.2, 0.3])
    labels[:, 4] = -1  # a label without positive
    ap = average_precision_per_label(scores, labels, ignore_zero=ignore_zero)
    np.testing.assert_allclose(ap, brute_force_ap(scores, labels, ignore_zero), equal_nan=True)
    assert np.isnan(ap[4]) and np.all((ap[~np.isnan(ap)] >= 0) & (ap[~np.isnan(ap)] <= 1))


def test_ap_without_ties_equals_mean_precision_at_positive_ranks():
    rng = np.random.default_rng(1)
    scores = rng.random((30, 5))
    labels = (rng.random((30, 5)) < 0.4).astype(int)
    expected = []
    for c in range(5):
        y = labels[np.argsort(-scores[:, c]), c]
        ranks = np.flatnonzero(y) + 1
        expected.append(np.mean(np.arange(1, ranks.size + 1) / ranks))
    np.testing.assert_allclose(average_precision_per_label(scores, labels), expected)


def test_torch_and_bool_inputs_give_numpy_result():
    rng = np.random.default_rng(2)
    scores = rng.random((12, 4)).astype(np.float32)
    labels = rng.random((12, 4)) < 0.5
    expected = mean_average_precision(scores, labels.astype(int))
    got = mean_average_precision(torch.from_numpy(scores), torch.from_numpy(labels))
    assert got == pytest.approx(expected)
    assert f1_at_k(torch.from_numpy(scores), torch.from_numpy(labels), 2) == pytest.approx(
        f1_at_k(scores, labels, 2))


def test_f1_at_k_hand_computed_and_k_above_label_count():
    scores = np.array([[0.9, 0.8, 0.1, 0.2], [0.1, 0.2, 0.3, 0.4]])
    labels = np.array([[1, 0, 1, 0], [0, 0, 0, 1]])
    f1, p, r = f1_at_k(scores, labels, 2)  # TP 2 of 4 predicted, 3 positives
    assert (p, r) == pytest.approx((1 / 2, 2 / 3)) and f1 == pytest.approx(4 / 7)
    f1, p, r = f1_at_k(scores, labels, 10)  # every label predicted
    assert (p, r) == pytest.approx((3 / 8, 1.0)) and f1 == pytest.approx(6 / 11)


def test_f1_ties_at_boundary_go_to_lower_class_index_and_zero_f1():
    scores = np.array([[0.5, 0.5, 0.5]])
    assert f1_at_k(scores, np.array([[1, 0, 0]]), 1) == pytest.approx((1.0, 1.0, 1.0))
    assert f1_at_k(scores, np.array([[0, 0, 1]]), 1) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        (np.zeros((3, 2)), np.zeros((3, 3)), "shape"),
        (np.zeros(3), np.zeros(3), "2-d"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "empty"),
        (np.array([[0.1, np.nan]]), np.array([[1, 0]]), "NaN"),
        (np.array([[0.1, 0.2]]), np.array([[2, 0]]), r"\{-1, 0, 1\}"),
    ],
)
def test_bad_inputs_raise_clear_errors(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        mean_average_precision(scores, labels)
    with pytest.raises(ValueError, match=match):
        f1_at_k(scores, labels, 1)


def test_undefined_metrics_raise():
    scores, labels = np.array([[0.3, 0.2]]), np.array([[0, -1]])
    with pytest.raises(ValueError, match="no label column has a positive"):
        mean_average_precision(scores, labels)
    with pytest.raises(ValueError, match="no positive"):
        f1_at_k(scores, labels, 1)
    with pytest.raises(ValueError, match="positive integer"):
        f1_at_k(scores, np.array([[1, 0]]), 0)
    with pytest.raises(ValueError, match="convention"):
        mean_average_precision(scores, np.array([[1, 0]]), convention="voc")
