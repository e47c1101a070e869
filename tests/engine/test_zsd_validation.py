"""The pseudo-unseen validation protocol's RoI-level figures on constructed logits."""
import pytest
import torch

from zsdet.engine.zsd_validation import roi_level_metrics

SEEN, UNSEEN, K = [0, 1, 2], [3, 4], 6  # column 5: a class of neither group (a true unseen class)


def logits_for(labels, margin):
    """Logits whose own class (or background, label K) wins by ``margin``."""
    logits = torch.zeros(len(labels), K + 1)
    logits[torch.arange(len(labels)), labels] = margin
    logits[:, 5] = 100.0  # the left-out column must not matter
    return logits


def test_a_perfect_classifier():
    labels = torch.tensor([0, 1, 2, 3, 4, 3, 6, 6])
    m = roi_level_metrics(logits_for(labels, 10.0), labels, SEEN, UNSEEN, "joint", 0.3)
    assert m["pzsd_map"] == pytest.approx(100) and m["gzsd_hm_map"] == pytest.approx(100)
    assert m["top1_unseen_as_seen"] == 0 and m["top1_seen_correct"] == 100 and m["bg_prob_on_unseen"] < 0.01


def test_unseen_objects_labelled_seen():
    labels = torch.tensor([0, 1, 3, 4])
    logits = logits_for(labels, 2.0)
    logits[2:, 0] = 5.0  # the unseen RoIs look like seen class 0
    for scoring in ("joint", "grouped"):
        m = roi_level_metrics(logits, labels, SEEN, UNSEEN, scoring, 0.3)
        assert m["top1_unseen_as_seen"] == 100 and m["top1_seen_correct"] == 100
    # ZSD scoring ignores the seen columns: the unseen RoIs still rank first for their class
    assert roi_level_metrics(logits, labels, SEEN, UNSEEN, "joint", 0.3)["pzsd_map"] == pytest.approx(100)
