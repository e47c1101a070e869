"""The seen group's MLP as M MLPs: ZSD.CLASSIFIER.SEEN_GROUP_FOLDS (each blind to one fold of the seen classes)
and SEEN_GROUP_ENSEMBLE (each knows every seen class)."""
import functools

import pytest
import torch

from zsdet.engine.box_classifier import fit_box_classifier, group_cross_entropy
from zsdet.modeling import SeenGroupMLPClassifier, SeenGroupMLPs
from zsdet.modeling.mlp_classifier import build_box_head

SEEN = [4, 0, 2, 5, 6]  # columns 0-6 are classes (1 and 3 unseen), 7 is background


def test_folds_leave_each_seen_class_out_once_and_never_know_unseen_or_background():
    torch.manual_seed(0)
    folds = SeenGroupMLPs(8, 4, 8, SEEN, 2, leave_out=True)
    known = folds.known.tolist()
    # seen classes in class order 0, 2, 4, 5, 6 go to folds 0, 1, 0, 1, 0: MLP 0 is blind to 0, 4, 6
    assert known == [[False, False, True, False, False, True, False, False],
                     [True, False, False, False, True, False, True, False]]
    assert folds.left_out(0).tolist() == [True, True, False, True, True, False, True, False]
    assert "known" in folds.state_dict()  # the folds travel with the weights


def test_output_is_the_mean_log_odds_of_the_mlps_that_know_a_class():
    torch.manual_seed(0)
    folds = SeenGroupMLPs(8, 4, 8, SEEN, 3, leave_out=True)
    x = torch.randn(5, 8)
    with torch.no_grad():
        out = folds(x)
        member = torch.stack([m(x) for m in folds.members])  # (3, 5, 8)
    odds = member - member[..., -1:]
    for s in SEEN:
        knowing = [k for k in range(3) if folds.known[k, s]]
        assert len(knowing) == 2
        torch.testing.assert_close(out[:, s], odds[knowing, :, s].mean(0))
    assert torch.equal(out[:, [1, 3, 7]], torch.zeros(5, 3))


def test_a_seen_group_head_takes_the_folds_as_its_mlp():
    head = build_box_head("seen_mlp", 8, 8, 4, SEEN, seen_group=(2, True))
    assert isinstance(head, SeenGroupMLPClassifier) and isinstance(head.mlp, SeenGroupMLPs)
    assert len(head.mlp.members) == 2 and head.in_features == 8
    with pytest.raises(ValueError, match=r"SEEN_GROUP_FOLDS must be >= 2 and at most the 5 seen classes, got 6"):
        build_box_head("seen_mlp", 8, 8, 4, SEEN, seen_group=(6, True))
    assert len(build_box_head("seen_mlp", 8, 8, 4, SEEN, seen_group=(6, False)).mlp.members) == 6
    with pytest.raises(ValueError, match=r"SEEN_GROUP_ENSEMBLE must be >= 2, got 1"):
        build_box_head("seen_mlp", 8, 8, 4, SEEN, seen_group=(1, False))


def test_an_ensemble_knows_every_seen_class_in_every_mlp_and_averages_their_log_odds():
    torch.manual_seed(0)
    mlps = SeenGroupMLPs(8, 4, 8, SEEN, 3, leave_out=False)
    seen = torch.zeros(8, dtype=torch.bool)
    seen[SEEN] = True
    assert all(torch.equal(row, seen) for row in mlps.known)
    assert all(torch.equal(mlps.left_out(m), ~seen & (torch.arange(8) < 7)) for m in range(3))  # unseen only
    x = torch.randn(5, 8)
    with torch.no_grad():
        member = torch.stack([m(x) for m in mlps.members])
        torch.testing.assert_close(mlps(x)[:, SEEN], (member - member[..., -1:]).mean(0)[:, SEEN])
    assert not torch.equal(mlps.members[0].hidden.weight, mlps.members[1].hidden.weight)  # another start each


def test_a_member_trained_with_its_fold_as_background_gives_that_fold_background():
    """Trained with the grouped seen loss and its left-out classes' rows as background, an MLP gives
    real rows of those classes a low seen probability, while the ensemble still names every seen class."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 16, generator=g) * 4
    labels = torch.tensor(SEEN + [7]).repeat_interleave(60)
    x = centres[labels] + torch.randn(len(labels), 16, generator=g)
    targets = torch.nn.functional.one_hot(labels, 8).float()
    torch.manual_seed(0)
    folds = SeenGroupMLPs(16, 32, 8, SEEN, 2, leave_out=True)
    for k, member in enumerate(folds.members):
        fit_box_classifier(member, x, targets, epochs=30, batch_size=64, lr=1e-2,
                           loss=functools.partial(group_cross_entropy, other=folds.left_out(k)))
    with torch.no_grad():
        for k, member in enumerate(folds.members):
            probs = torch.softmax(member(x).masked_fill(folds.left_out(k), float("-inf")), 1)
            blind = folds.left_out(k)[labels] & (labels != 7)
            assert float(probs[blind, :-1].sum(1).mean()) < 0.1  # its left-out classes are background to it
        seen_rows = labels != 7
        assert float((folds(x)[seen_rows].argmax(1) == labels[seen_rows]).float().mean()) > 0.95
