"""SEEN_DISTILLATION: the real single-label rows' targets mix their one-hot with the seen detector's
softmax over seen classes and background; mixtures keep theirs."""
import pytest
import torch

from zsdet.engine.box_classifier import soft_targets
from zsdet.engine.synthesis_classifier import detector_distilled_targets

SEEN, UNSEEN, K = [0, 1, 2], [3, 4], 5  # columns 0-4, background 5; the detector knows 0-2 + background


def _rows():
    torch.manual_seed(0)
    detector = torch.nn.Linear(8, len(SEEN) + 1)
    x = torch.randn(6, 8)
    y = torch.zeros(6, K + 1)
    y[0, 0] = y[1, 2] = y[2, K] = y[3, K] = 1  # two seen RoIs, two background RoIs
    y[4, [0, 1]] = y[5, [1, 2]] = 1  # two mixtures
    return detector.weight.detach(), detector.bias.detach(), x, y


@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
def test_single_label_rows_mix_in_the_detectors_softmax(w):
    weight, bias, x, y = _rows()
    targets = detector_distilled_targets(x, y, weight, bias, UNSEEN, w)
    teacher = torch.softmax(x[:4] @ weight.T + bias, 1)  # (4, seen + background)
    expected = (1 - w) * y[:4] + w * torch.cat([teacher[:, :3], torch.zeros(4, 2), teacher[:, 3:]], 1)
    torch.testing.assert_close(targets[:4], expected)
    torch.testing.assert_close(targets[4:], soft_targets(y[4:]))  # mixtures: 0.5 / 0.5 as before
    assert torch.all(targets[:, UNSEEN] == 0)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))


def test_no_distillation_is_the_plain_targets():
    weight, bias, x, y = _rows()
    assert torch.equal(detector_distilled_targets(x, y, weight, bias, UNSEEN, 0.0), soft_targets(y))
