"""SEEN_GROUP_NEGATIVES: real mixtures of two or more seen classes, background to the seen group's MLP,
with the real rows' share of exact zeros."""
import pytest
import torch

from zsdet.config import get_zsdet_cfg
from zsdet.engine.synthesis_classifier import seen_group_negatives

C, D = 4, 64  # classes 0-2 seen with real rows, 3 unseen; background column C


def real_rows(sparse: bool, per_class: int = 200, bg: int = 100):
    """(x, y): single-label rows of classes 0-2 (each class marked on its own dimensions), sparse like
    post-ReLU features (~84 % zeros) or never 0, background rows, and a 2-class real mixture row that
    must not be mixed again."""
    g = torch.Generator().manual_seed(0)
    xs, ys = [], []
    for k in range(3):
        noise = torch.randn(per_class, D, generator=g)
        x = torch.relu(noise - 1.0) if sparse else noise.abs() + 0.1
        x[:, k * 16:(k + 1) * 16] = 3.0 + noise[:, k * 16:(k + 1) * 16].abs()  # continuous: no ties
        y = torch.zeros(per_class, C + 1)
        y[:, k] = 1
        xs.append(x)
        ys.append(y)
    xs.append(torch.relu(torch.randn(bg, D, generator=g)))
    ys.append(torch.nn.functional.one_hot(torch.full((bg,), C), C + 1).float())
    mixture = torch.zeros(1, C + 1)
    mixture[0, :2] = 0.5
    xs.append(torch.full((1, D), 100.0))  # marks the row: it must never be a member
    ys.append(mixture)
    return torch.cat(xs), torch.cat(ys)


def cfg_with(ratio: float):
    cfg = get_zsdet_cfg()
    cfg.ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES, cfg.SEED = ratio, 0
    return cfg


def test_negatives_are_multi_class_mixtures_of_real_seen_rows_with_background_targets():
    x, y = real_rows(sparse=False)  # no zeros: the zero-share step leaves the mixtures as they are
    neg_x, neg_t, record = seen_group_negatives(cfg_with(0.5), x, y)
    assert record["drawn"] == 300  # 0.5 x 600 single-label seen rows
    assert neg_x.shape == (record["rows"], D) and 200 <= record["rows"] < 300  # sets of one class dropped
    assert record["zeros_real"] == record["zeros_after"] == 0
    assert torch.equal(neg_t, torch.nn.functional.one_hot(torch.full((len(neg_x),), C), C + 1).float())
    assert float(neg_x.max()) < 100  # neither the real mixture row nor background rows are members
    # two or more classes in every row: each row carries at least a third of two classes' marks (> 3.0)
    class_mass = torch.stack([neg_x[:, k * 16:(k + 1) * 16].mean(1) for k in range(3)], 1)
    assert bool(((class_mass > 1.0).sum(1) >= 2).all())
    assert bool(((class_mass > 1.0).sum(1) == 2).any()) and bool(((class_mass > 1.0).sum(1) == 3).any())


def test_negatives_get_the_real_share_of_exact_zeros():
    x, y = real_rows(sparse=True)
    _, _, record = seen_group_negatives(cfg_with(0.5), x, y)
    assert record["zeros_before"] < record["zeros_real"] - 0.2  # a mean of sparse rows is denser
    assert record["zeros_after"] == pytest.approx(record["zeros_real"], abs=0.02)


def test_negatives_are_a_function_of_the_seed():
    x, y = real_rows(sparse=True)
    a, _, _ = seen_group_negatives(cfg_with(0.5), x, y)
    b, _, _ = seen_group_negatives(cfg_with(0.5), x, y)
    cfg = cfg_with(0.5)
    cfg.SEED = 1
    c, _, _ = seen_group_negatives(cfg, x, y)
    assert torch.equal(a, b) and not torch.equal(a[:10], c[:10])


def test_one_seen_class_gives_a_clear_error():
    x, y = real_rows(sparse=True)
    keep = (y[:, 0] == 1) | (y[:, -1] == 1)
    with pytest.raises(ValueError, match="SEEN_GROUP_NEGATIVES: fewer than 2 mixtures of two or more seen classes"):
        seen_group_negatives(cfg_with(0.5), x[keep], y[keep])
