"""LabelSets construction and helpers, label-set sampling (explicit, co-occurrence, nearest unseen)."""
import pytest
import torch

from zsdet.synthesis import LabelSets, nearest_unseen, sample_label_sets, unseen_label_sets


def as_lists(sets: LabelSets):
    return [row[m].tolist() for row, m in zip(sets.idx, sets.mask)]


def test_from_multi_hot_pads_and_masks():
    y = torch.tensor([[0, 1, 0, 1], [1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.float32)
    sets = LabelSets.from_multi_hot(y)
    assert sets.idx.shape == (3, 3) and len(sets) == 3
    assert as_lists(sets) == [[1, 3], [0], [0, 1, 2]]
    assert sets.mask.tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    assert sets.sizes().tolist() == [2, 1, 3]
    torch.testing.assert_close(sets.to_multi_hot(4), y)
    # signed {-1, 0, 1} labels: only +1 is a positive
    assert as_lists(LabelSets.from_multi_hot(torch.tensor([[-1, 1, 0]]))) == [[1]]


def test_from_lists_and_helpers():
    sets = LabelSets.from_lists([[3, 1, 3], [2]], num_classes=5)
    assert as_lists(sets) == [[1, 3], [2]]  # sorted, duplicates merged
    rows, classes = sets.pairs()
    assert rows.tolist() == [0, 0, 1] and classes.tolist() == [1, 3, 2]
    assert as_lists(sets.repeat_each(2)) == [[1, 3], [1, 3], [2], [2]]
    assert as_lists(sets[1:]) == [[2]] and sets[1:].idx.shape == (1, 1)  # padding trimmed
    both = LabelSets.cat([sets, LabelSets.from_lists([[0, 1, 2]], 5)])
    assert as_lists(both) == [[1, 3], [2], [0, 1, 2]]


def test_empty_label_sets_are_errors():
    with pytest.raises(ValueError, match="empty label set: row 1"):
        LabelSets.from_multi_hot(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="empty label set at position 0"):
        LabelSets.from_lists([[]], 3)
    with pytest.raises(ValueError, match="empty label set at row 0"):
        LabelSets(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(KeyError, match=r"\[7\] outside \[0, 5\)"):
        LabelSets.from_lists([[1, 7]], 5)


EMB = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.95, 0.0], [0.0, 0.95], [-1.0, 0.0]])
SEEN, UNSEEN = [0, 1, 2, 3, 6], [4, 5]  # 4 sits beside 0 / 1, 5 beside 2 / 3; 6 is nearest to 5


def test_nearest_unseen():
    mapping = nearest_unseen(EMB, SEEN, UNSEEN)
    assert mapping.tolist() == [4, 4, 5, 5, 4, 5, 5]
    with pytest.raises(KeyError, match="class id 9"):
        nearest_unseen(EMB, SEEN, [9])


def test_unseen_label_sets():
    assert as_lists(unseen_label_sets([5, 4])) == [[5], [4]]


def real_seen_sets(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(n, 7)
    y[:, :4] = (torch.rand(n, 4, generator=g) < 0.5).float()
    y[y.sum(1) == 0, 0] = 1
    return LabelSets.from_multi_hot(y)


def test_sample_label_sets_proportions_and_kinds():
    real = real_seen_sets()
    mapping = nearest_unseen(EMB, SEEN, UNSEEN)
    out = sample_label_sets(real, EMB, SEEN, UNSEEN, seen_fraction=0.5, unseen_fraction=0.25, mixed_fraction=1.0,
                            mixed_keep_seen=0.5, rounds=2, seed=1)
    sets = as_lists(out)
    per_round = 20 + 10 + 40
    assert len(sets) == 2 * per_round
    real_lists = {tuple(s) for s in as_lists(real)}
    seen_part, unseen_part, mixed_part = sets[:20], sets[20:30], sets[30:70]
    assert all(tuple(s) in real_lists for s in seen_part)
    assert all(set(s) <= set(UNSEEN) for s in unseen_part)
    # mixed sets: floor(n / 2) labels kept seen, the others replaced by their nearest unseen class
    real_by_source = {}
    for s in mixed_part:
        kept = [c for c in s if c in SEEN]
        assert all(c in SEEN or c in UNSEEN for c in s)
        real_by_source.setdefault(len(kept), []).append(s)
    assert all(len([c for c in s if c in SEEN]) <= 2 for s in mixed_part)  # at most floor(4 / 2)
    assert any(set(s) & set(UNSEEN) and set(s) & set(SEEN) for s in mixed_part)
    for s in mixed_part:  # every unseen label of a mixed set is the image of some seen label
        assert all(c in mapping[torch.tensor([0, 1, 2, 3])].tolist() for c in s if c in UNSEEN)
    # deterministic in the seed
    again = sample_label_sets(real, EMB, SEEN, UNSEEN, seen_fraction=0.5, unseen_fraction=0.25, mixed_fraction=1.0,
                              rounds=2, seed=1)
    assert torch.equal(again.idx, out.idx) and torch.equal(again.mask, out.mask)


def test_every_unseen_class_is_covered():
    # real sets only use classes 0 and 1, which map to unseen 4: class 5 must be added anyway
    real = LabelSets.from_lists([[0], [1], [0, 1]] * 5, 7)
    out = sample_label_sets(real, EMB, SEEN, UNSEEN, seen_fraction=1.0, unseen_fraction=0.4, mixed_fraction=0.0,
                            seed=0)
    counts = torch.bincount(out.idx[out.mask], minlength=7)
    assert counts[5] >= 1
    assert counts[5] == counts[4]  # added as often as the rarest present unseen class (only 4 here)
