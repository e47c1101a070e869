"""Stage-6 box-classifier retraining helpers."""
import numpy as np
import pytest
import torch

from zsdet.data.row_sampling import balanced_rows
from zsdet.engine.box_classifier import (fit_box_classifier, grouped_cross_entropy, seen_group_cross_entropy,
                                         soft_targets)
from zsdet.modeling.zsd_predictor import gzsd_probs


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


def test_grouped_loss_is_the_cross_entropy_of_each_scoring_group():
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.3], [0.1, -0.4, 1.5, 0.0]], requires_grad=True)
    targets = torch.tensor([[0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 1.0, 0.0]])  # seen + unseen mixture; unseen
    unseen_mask = torch.tensor([False, False, True, False])  # columns: seen 0, 1; unseen 2; background 3
    loss = grouped_cross_entropy(logits, targets, unseen_mask)
    seen_group = torch.log_softmax(logits[:, [0, 1, 3]], 1)  # the other group's mass goes to background
    unseen_group = torch.log_softmax(logits[:, [2, 3]], 1)
    expected = -(torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.0, 1.0]]) * seen_group).sum(1).mean() / 2 \
        - (torch.tensor([[0.5, 0.5], [1.0, 0.0]]) * unseen_group).sum(1).mean() / 2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert bool(torch.isfinite(logits.grad).all())
    assert unseen_mask.tolist() == [False, False, True, False]  # the caller's mask is left alone


def test_seen_group_loss_is_the_seen_softmax_alone():
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.3], [0.1, -0.4, 1.5, 0.0]], requires_grad=True)
    targets = torch.tensor([[0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 1.0, 0.0]])  # seen + unseen mixture; unseen
    unseen_mask = torch.tensor([False, False, True, False])  # columns: seen 0, 1; unseen 2; background 3
    loss = seen_group_cross_entropy(logits, targets, unseen_mask)
    seen_group = torch.log_softmax(logits[:, [0, 1, 3]], 1)  # the unseen mass goes to background
    torch.testing.assert_close(loss, -(torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.0, 1.0]]) * seen_group).sum(1).mean())
    loss.backward()
    assert bool((logits.grad[:, 2] == 0).all()) and bool((logits.grad[:, [0, 1, 3]] != 0).all())


def test_grouped_loss_makes_unseen_features_background_to_the_seen_group():
    """An unseen cluster lying beyond a seen one: trained jointly, the seen group of grouped scoring
    calls it the seen class; trained with the grouped loss or its seen half alone, background."""
    torch.manual_seed(0)
    direction, across = torch.linalg.qr(torch.randn(8, 2))[0].T  # orthonormal
    centres = torch.stack([2 * direction, -2 * direction, 4 * direction, 3 * across])  # A, B, unseen U, bg
    labels = torch.arange(400) % 4
    x = centres[labels] + 0.3 * torch.randn(400, 8)
    y = torch.nn.functional.one_hot(labels, 4).float()
    unseen_mask = torch.tensor([False, False, True, False])
    unseen_rows = labels == 2
    seen_label_share = {}
    for name, loss in (("joint", None), ("grouped", lambda lg, t: grouped_cross_entropy(lg, t, unseen_mask)),
                       ("seen_group", lambda lg, t: seen_group_cross_entropy(lg, t, unseen_mask))):
        torch.manual_seed(1)
        clf = torch.nn.Linear(8, 4)
        fit_box_classifier(clf, x, y, epochs=50, batch_size=32, lr=3e-2, seed=0, loss=loss)
        with torch.no_grad():
            probs = gzsd_probs(clf(x[unseen_rows]), unseen_mask.clone(), "grouped", 0.0, 0.3)
        seen_label_share[name] = float((probs[:, :2].max(1).values > 0).float().mean())
    assert seen_label_share["joint"] > 0.9, seen_label_share
    assert seen_label_share["grouped"] < 0.15 and seen_label_share["seen_group"] < 0.15, seen_label_share
