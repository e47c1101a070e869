"""Stage-6 box-classifier retraining helpers."""
import numpy as np
import pytest
import torch

from zsdet.data.row_sampling import balanced_rows
from zsdet.engine.box_classifier import fit_box_classifier, soft_targets


def test_soft_targets_normalise_and_reject_empty():
    y = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(soft_targets(y), torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="empty label set"):
        soft_targets(torch.zeros(1, 3))


def test_balanced_rows_caps_each_label():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    rows = balanced_rows(labels, per_class=4, rng=np.random.default_rng(0))
    counts = np.bincount(labels[rows], minlength=3)
    assert counts.tolist() == [4, 3, 4]
    assert len(set(rows.tolist())) == len(rows)


def test_fit_learns_separable_classes():
    torch.manual_seed(0)
    centers = torch.randn(3, 16) * 3
    labels = torch.arange(300) % 3
    x = centers[labels] + 0.3 * torch.randn(300, 16)
    y = torch.nn.functional.one_hot(labels, 3).float()
    clf = torch.nn.Linear(16, 3)
    stats = fit_box_classifier(clf, x, y, epochs=5, batch_size=32, lr=1e-2, seed=0)
    assert stats["train_accuracy"] > 0.95
    assert (clf(x).argmax(1) == labels).float().mean() > 0.95


def test_fit_rejects_nan_features():
    with pytest.raises(ValueError, match="non-finite"):
        fit_box_classifier(torch.nn.Linear(2, 2), torch.tensor([[float("nan"), 0.0]]),
                           torch.tensor([[1.0, 0.0]]), epochs=1, batch_size=1, lr=0.1)
