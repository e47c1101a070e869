"""GZSD calibration: the seen-logit bias is the largest within the seen-accuracy budget, and it is
folded into the classifier exactly as the predictor's SEEN_LOGIT_BIAS would apply it."""
import pytest
import torch

from zsdet.engine.gzsd_calibration import (BIAS_GRID, choose_seen_bias, detector_logits, fold_seen_bias,
                                           fold_unseen_bias, seen_roi_labels, top1_accuracy)
from zsdet.modeling.zsd_predictor import gzsd_probs

SEEN, UNSEEN, K = [0, 1, 2], [3, 4], 5


def margins_case(shift: float = 0.0):
    """(logits (100, K + 1), labels (100,)): 100 seen RoIs of class 0 whose seen logit beats the best
    unseen logit by margins 0.0 .. 9.9, minus ``shift``."""
    logits = torch.full((100, K + 1), -10.0)
    logits[:, 0] = torch.arange(100) * 0.1 - shift
    logits[:, 3] = 0.0
    return logits, torch.zeros(100, dtype=torch.long)


def linear_case():
    """(seeded nn.Linear(8, K + 1), inputs (20, 8), unseen mask (K + 1,))."""
    torch.manual_seed(0)
    unseen_mask = torch.zeros(K + 1, dtype=torch.bool)
    unseen_mask[UNSEEN] = True
    return torch.nn.Linear(8, K + 1), torch.randn(20, 8), unseen_mask


def test_bias_is_the_largest_within_the_budget():
    logits, labels = margins_case()
    # joint scoring: a RoI stays right while bias <= margin (ties go to the first column, class 0);
    # a budget of 5 points of 100 RoIs lets the 5 smallest margins flip
    choice = choose_seen_bias(logits, labels, UNSEEN, "joint", 0.3, budget=5.0)
    assert choice["seen_top1_at_0"] == 100.0 and choice["seen_top1"] == 95.0
    assert choice["seen_logit_bias"] == pytest.approx(0.5) and choice["num_rois"] == 100
    assert choose_seen_bias(logits, labels, UNSEEN, "joint", 0.3, budget=50.0)["seen_logit_bias"] == pytest.approx(5.0)
    assert choose_seen_bias(logits, labels, UNSEEN, "joint", 0.3, budget=100.0)["seen_logit_bias"] == BIAS_GRID[-1]


def test_folding_the_bias_equals_the_predictors_joint_bias():
    classifier, x, unseen_mask = linear_case()
    expected = gzsd_probs(classifier(x), unseen_mask, "joint", seen_logit_bias=2.5)
    fold_seen_bias(classifier, SEEN, 2.5)
    torch.testing.assert_close(gzsd_probs(classifier(x), unseen_mask, "joint"), expected)
    labels = torch.randint(0, 3, (20,))
    assert top1_accuracy(classifier(x), labels, unseen_mask, "grouped", 0.3, 0.0) == top1_accuracy(
        classifier(x) + 2.5 * torch.tensor([1, 1, 1, 0, 0, 0.0]), labels, unseen_mask, "grouped", 0.3, 2.5)


def test_no_held_out_rois_is_an_error():
    with pytest.raises(ValueError, match="held-out real seen RoIs"):
        choose_seen_bias(torch.zeros(0, K + 1), torch.zeros(0, dtype=torch.long), UNSEEN, "joint", 0.3, 5.0)


def test_budget_counts_from_the_reference():
    # at bias b the RoIs with margin < b flip; a reference above the accuracy at bias 0 leaves less
    # of the budget, one out of reach gives bias 0
    logits, labels = margins_case()
    choice = choose_seen_bias(logits, labels, UNSEEN, "joint", 0.3, budget=5.0, reference_top1=101.0)
    assert choice["seen_logit_bias"] == pytest.approx(0.25) and choice["seen_top1"] == 97.0
    assert choice["reference_top1"] == 101.0
    assert choose_seen_bias(logits, labels, UNSEEN, "joint", 0.3, budget=5.0,
                            reference_top1=110.0)["seen_logit_bias"] == 0.0


def test_unseen_bias_multiplies_the_unseen_odds_against_background():
    classifier, x, unseen_mask = linear_case()
    before = gzsd_probs(classifier(x), unseen_mask, "grouped", seen_thresh=0.0)
    fold_unseen_bias(classifier, UNSEEN, 2.0)
    after = gzsd_probs(classifier(x), unseen_mask, "grouped", seen_thresh=0.0)
    seen_group_bg = torch.softmax(classifier(x).masked_fill(unseen_mask, float("-inf")), -1)[:, -1]  # bias-free

    def p_bg_unseen(p):  # grouped scoring's background column is the mean of the two groups'
        return 2 * p[:, -1] - seen_group_bg

    # unseen group: p_u / p_bg_unseen grows by e^2; the seen group is untouched
    torch.testing.assert_close(after[:, UNSEEN] / p_bg_unseen(after)[:, None],
                               torch.exp(torch.tensor(2.0)) * before[:, UNSEEN] / p_bg_unseen(before)[:, None])
    torch.testing.assert_close(after[:, SEEN], before[:, SEEN])


def test_a_negative_bias_brings_a_classifier_below_the_budget_back():
    # margins -3.0 .. 6.9: 70 RoIs right at bias 0, reference 100, budget 4 (floor 96); at bias b the
    # RoIs with margin >= b stay right: b = -2.75 keeps 97, b = -2.5 at most 95
    logits, labels = margins_case(shift=3.0)
    kept = choose_seen_bias(logits, labels, UNSEEN, "joint", 0.3, budget=4.0, reference_top1=100.0)
    assert kept["seen_logit_bias"] == 0.0 and kept["seen_top1"] == 70.0 and not kept["within_budget"]
    raised = choose_seen_bias(logits, labels, UNSEEN, "joint", 0.3, budget=4.0, reference_top1=100.0,
                              lowest_bias=-10.0)
    assert raised["seen_logit_bias"] == pytest.approx(-2.75) and raised["seen_top1"] == 97.0
    assert raised["within_budget"] and raised["seen_top1_at_0"] == 70.0
    out_of_reach = choose_seen_bias(logits, labels, UNSEEN, "joint", 0.3, budget=4.0, reference_top1=200.0,
                                    lowest_bias=-10.0)
    assert out_of_reach["seen_logit_bias"] == -BIAS_GRID[-1] and not out_of_reach["within_budget"]
    # a capped negative side stops at its cap, within the budget or not
    capped = choose_seen_bias(logits, labels, UNSEEN, "joint", 0.3, budget=4.0, reference_top1=100.0,
                              lowest_bias=-2.0)
    assert capped["seen_logit_bias"] == pytest.approx(-2.0) == capped["lowest_bias"] and not capped["within_budget"]
    assert capped["seen_top1"] == 90.0  # margins >= -2.0: 50 + 40 of 100 rows
    assert choose_seen_bias(logits, labels, UNSEEN, "joint", 0.3, budget=4.0, reference_top1=100.0,
                            lowest_bias=-3.0)["seen_logit_bias"] == pytest.approx(-2.75)
    assert choose_seen_bias(logits, labels, UNSEEN, "joint", 0.3, budget=4.0, reference_top1=100.0,
                            lowest_bias=-0.1)["seen_logit_bias"] == 0.0
    # within the budget at bias 0: negative biases are never tried
    assert choose_seen_bias(*margins_case(), UNSEEN, "joint", 0.3, budget=5.0,
                            lowest_bias=-10.0)["seen_logit_bias"] == pytest.approx(0.5)


def test_a_row_without_any_positive_probability_has_no_label():
    # grouped scoring: class 0's seen probability about 0.5 / 0.1 against background, unseen columns at -inf
    logits = torch.full((2, K + 1), float("-inf"))
    logits[:, [0, 1, 2, K]] = torch.tensor([[0.0, -9.0, -9.0, 0.0], [0.0, -9.0, -9.0, 2.2]])
    labels = torch.zeros(2, dtype=torch.long)
    unseen_mask = torch.zeros(K + 1, dtype=torch.bool)
    unseen_mask[UNSEEN] = True
    assert top1_accuracy(logits, labels, unseen_mask, "grouped", 0.3, 0.0) == 50.0  # the second is floored to 0


def test_detector_logits_are_laid_out_as_the_retrained_classifiers_columns():
    torch.manual_seed(0)
    detector = torch.nn.Linear(8, 4 + 1)  # 4 classes + background; the retrained one has a fifth class
    x = torch.randn(6, 8)
    out = detector_logits(detector.weight.detach(), detector.bias.detach(), x, 5 + 1, unseen_ids=[3, 4])
    own = detector(x).detach()
    torch.testing.assert_close(out[:, :3], own[:, :3])
    torch.testing.assert_close(out[:, -1], own[:, -1])
    assert bool(torch.isneginf(out[:, 3:5]).all())


def test_where_seen_rois_go():
    """Four seen RoIs of class 0, grouped scoring: one right, one to seen class 1, one to unseen class 3
    (its seen group split between classes 0 and 1, both under the unseen class's probability), one
    with no label (every probability floored or at -inf); the seen columns alone rank class 0 first in
    three of them."""
    logits = torch.full((4, K + 1), float("-inf"))
    logits[0, [0, K]] = torch.tensor([3.0, 0.0])
    logits[1, [0, 1, K]] = torch.tensor([0.0, 3.0, 0.0])
    logits[2, [0, 1, 3, K]] = torch.tensor([2.1, 2.0, 3.0, 0.0])
    logits[3, [0, K]] = torch.tensor([0.0, 3.0])
    unseen_mask = torch.zeros(K + 1, dtype=torch.bool)
    unseen_mask[UNSEEN] = True
    where = seen_roi_labels(logits, torch.zeros(4, dtype=torch.long), unseen_mask, "grouped", 0.3, 0.0)
    assert where == {"own": 25.0, "other_seen": 25.0, "unseen": 25.0, "none": 25.0, "seen_columns_top1": 75.0}
    assert where["own"] == top1_accuracy(logits, torch.zeros(4, dtype=torch.long), unseen_mask, "grouped", 0.3, 0.0)
    # a seen bias of -10 raises the seen group against background only: the unseen class still wins row 2
    raised = seen_roi_labels(logits, torch.zeros(4, dtype=torch.long), unseen_mask, "grouped", 0.3, -10.0)
    assert raised["unseen"] == 25.0 and raised["own"] == 50.0 and raised["none"] == 0.0
