"""Anchored synthesis (zsdet.synthesis.anchoring) on constructed cases with known answers."""
import pytest
import torch

from zsdet.synthesis.anchoring import anchor_classes, anchor_rows, anchored_features

# classes 0-3 seen, 4-5 unseen; 4 lies next to 0, 5 next to 3
EMBEDDINGS = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 1.0, 0.0], [0.0, 0.1, 1.0],
                           [0.99, 0.1, 0.0], [0.0, 0.0, 1.0]])
SEEN = [0, 1, 2, 3]


def sets(*rows):
    y = torch.zeros(len(rows), 6)
    for i, row in enumerate(rows):
        y[i, list(row)] = 1
    return y


def test_nearest_one_is_the_closest_seen_class():
    got = anchor_classes(sets([4], [5], [4], [5]), EMBEDDINGS, SEEN, 1, torch.Generator().manual_seed(0))
    assert got.tolist() == [0, 3, 0, 3]


def test_nearest_k_draws_among_the_k_closest_and_zero_among_all():
    gen = torch.Generator().manual_seed(0)
    two = anchor_classes(sets(*[[4]] * 400), EMBEDDINGS, SEEN, 2, gen)
    assert set(two.tolist()) == {0, 1}  # both drawn, nothing else
    every = anchor_classes(sets(*[[4]] * 400), EMBEDDINGS, SEEN, 0, gen)
    assert set(every.tolist()) == set(SEEN)


def test_a_sets_own_seen_classes_are_never_anchors():
    gen = torch.Generator().manual_seed(1)
    got = anchor_classes(sets(*[[0, 4]] * 300), EMBEDDINGS, SEEN, 2, gen)  # 0 is nearest, but in the set
    assert 0 not in got.tolist() and set(got.tolist()) <= {1, 2}
    with pytest.raises(ValueError, match="every seen class"):
        anchor_classes(sets([0, 1, 2, 3, 4]), EMBEDDINGS, SEEN, 1, gen)


def test_anchor_rows_are_rows_of_the_anchor_class_drawn_uniformly():
    real_classes = torch.tensor([2, 0, 2, 1, 0, 2])
    rows = anchor_rows(torch.tensor([2] * 3000 + [1]), real_classes, torch.Generator().manual_seed(0))
    assert (real_classes[rows] == torch.tensor([2] * 3000 + [1])).all()
    counts = torch.bincount(rows[:3000], minlength=6)[[0, 2, 5]].float()
    assert (counts / 1000 - 1).abs().max() < 0.15
    with pytest.raises(ValueError, match="seen class 3 has no real training row"):
        anchor_rows(torch.tensor([3]), real_classes, torch.Generator())


def test_anchored_features_move_the_real_row_by_the_difference_within_the_range():
    real = torch.tensor([[0.0, 2.0, 1.0]])
    out = anchored_features(real, torch.tensor([[0.5, 0.0, 3.0]]), torch.tensor([[0.25, 1.0, 0.0]]),
                            torch.zeros(3), torch.tensor([5.0, 5.0, 3.5]))
    assert out.tolist() == [[0.25, 1.0, 3.5]]
    # a generator that ignores the class gives back the real row: nothing of the synthesized features is left
    g = torch.rand(4, 3)
    assert torch.allclose(anchored_features(real.expand(4, 3), g, g, torch.zeros(3), torch.full((3,), 9.0)),
                          real.expand(4, 3), atol=1e-6)
