"""SEEN_ROWS detector: grouped GZSD scoring's seen group becomes the seen detector's, the unseen
group stays the retrained classifier's."""
import torch

from zsdet.engine.synthesis_classifier import keep_detector_seen_group
from zsdet.modeling.zsd_predictor import gzsd_probs

SEEN, UNSEEN, K = [0, 1, 2], [3, 4], 5


def test_seen_group_is_the_detectors_and_the_unseen_group_is_untouched():
    torch.manual_seed(0)
    detector, classifier, x = torch.nn.Linear(8, K + 1), torch.nn.Linear(8, K + 1), torch.randn(30, 8)
    unseen_mask = torch.zeros(K + 1, dtype=torch.bool)
    unseen_mask[UNSEEN] = True
    before = gzsd_probs(classifier(x).detach(), unseen_mask, "grouped", seen_thresh=0.0)
    keep_detector_seen_group(classifier, detector.weight.detach(), detector.bias.detach(), SEEN)
    after = gzsd_probs(classifier(x).detach(), unseen_mask, "grouped", seen_thresh=0.0)
    seen_columns = SEEN + [K]
    detector_seen_group = torch.softmax(detector(x).detach()[:, seen_columns], -1)
    retrained_seen_group = torch.softmax(classifier(x).detach()[:, seen_columns], -1)
    torch.testing.assert_close(retrained_seen_group, detector_seen_group)
    torch.testing.assert_close(after[:, SEEN], detector_seen_group[:, :-1])
    torch.testing.assert_close(after[:, UNSEEN], before[:, UNSEEN])
    assert not torch.allclose(after[:, SEEN], before[:, SEEN])
