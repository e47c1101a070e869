"""benchmarks/zsd_recall_loss.py: every stage an object can be lost at, on one constructed image
(the world part needs a trained world and is run by the benchmark itself)."""
import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/zsd_recall_loss.py")


def box(x):
    """A 10 x 10 box at (x, 0)."""
    return [x, 0.0, x + 10.0, 10.0]


# 5 unseen objects of classes 0 and 1 (K = 3: class 2 seen, column 3 background), one per fate
GT_BOXES = torch.tensor([box(0), box(100), box(200), box(300), box(400)])
GT_CLASSES = torch.tensor([0, 1, 0, 1, 0])
# the RoI head's boxes: object 1 has none overlapping it; objects 0, 2, 3, 4 one exact box each,
# and object 2 a second, shifted box (IoU 1/3) whose class score would have passed
BOXES = torch.tensor([box(0), box(200), box(300), box(400), box(205)])
PROBS = torch.tensor([[0.90, 0.00, 0.0, 0.10],    # object 0: its class wins
                      [0.04, 0.00, 0.0, 0.96],    # object 2: under 0.05, background wins
                      [0.50, 0.02, 0.0, 0.48],    # object 3: under 0.05, class 0 wins
                      [0.30, 0.00, 0.0, 0.70],    # object 4: passes, but no detection kept
                      [0.90, 0.00, 0.0, 0.10]])   # off object 2
# final detections: object 0 found; object 4's box dropped (e.g. by the top-k cut); a wrong-class hit on 3
DET_BOXES = torch.tensor([box(0), box(300)])
DET_CLASSES = torch.tensor([0, 0])


def test_each_object_gets_the_first_stage_it_is_lost_at(bench):
    fates, best = bench.object_fates(GT_BOXES, GT_CLASSES, BOXES, PROBS, DET_BOXES, DET_CLASSES, 0.05, 0.5)
    assert [bench.FATES[f] for f in fates] == ["found", "no_box", "to_background", "to_other_unseen",
                                               "lost_after_scoring"]
    torch.testing.assert_close(best, torch.tensor([0.90, 0.0, 0.04, 0.02, 0.30]))
    assert bench.fate_shares(fates) == {name: 20.0 for name in bench.FATES}


def test_a_looser_overlap_counts_the_shifted_box(bench):
    """At IoU 0.3 the shifted box covers object 2 and scores class 0 at 0.90: past the threshold, yet
    not detected."""
    fates, best = bench.object_fates(GT_BOXES, GT_CLASSES, BOXES, PROBS, DET_BOXES, DET_CLASSES, 0.05, 0.3)
    assert bench.FATES[fates[2]] == "lost_after_scoring" and float(best[2]) == pytest.approx(0.90)


def test_an_image_without_boxes(bench):
    fates, best = bench.object_fates(GT_BOXES, GT_CLASSES, torch.zeros(0, 4), torch.zeros(0, 4),
                                     torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 0.05, 0.5)
    assert [bench.FATES[f] for f in fates] == ["no_box"] * 5 and float(best.sum()) == 0.0
