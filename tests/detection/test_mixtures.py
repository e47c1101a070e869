"""Multi-label RoI mixtures: set sampling, fusion and the epoch source."""
import numpy as np
import pytest
import torch

from zsdet.data.mixtures import RoIMixtureSource, fuse_mixtures, sample_mixture_sets


def test_sample_sets_sizes_and_padding():
    rng = np.random.default_rng(0)
    idx, mask = sample_mixture_sets(10, 500, 2, 4, rng)
    sizes = mask.sum(1)
    assert idx.shape == mask.shape == (500, 4)
    assert sizes.min() == 2 and sizes.max() == 4
    assert (idx[~mask] == 0).all() and idx.max() < 10
    assert (mask[:, :2]).all()  # members first, padding last


def test_fuse_is_masked_mean_and_union():
    feats = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    labels = torch.tensor([0, 2, 2])
    idx = torch.tensor([[0, 1, 0], [1, 2, 0], [2, 0, 0]])
    mask = torch.tensor([[True, True, False], [True, True, False], [True, False, False]])
    fused, multi_hot = fuse_mixtures(feats, labels, idx, mask, num_classes=3)
    torch.testing.assert_close(fused, torch.tensor([[0.5, 1.0], [2.0, 3.0], [4.0, 4.0]]))
    # padded slots point at row 0 (class 0) but must not add class 0 to the union
    torch.testing.assert_close(multi_hot, torch.tensor([[1.0, 0, 1], [0, 0, 1], [0, 0, 1]]))


def test_source_is_deterministic_and_covers_singles():
    feats = torch.randn(50, 8)
    labels = torch.arange(50) % 5
    src = RoIMixtureSource(feats, labels, num_classes=7, mixture_ratio=0.4)
    assert len(src) == 70 and src.feature_dim == 8
    a = list(src.iter_batches(16, epoch=3, seed=1))
    b = list(src.iter_batches(16, epoch=3, seed=1))
    c = list(src.iter_batches(16, epoch=4, seed=1))
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][0], c[0][0])
    y = torch.cat([yb for _, yb in a])
    assert y.shape == (70, 7) and (y.sum(1) >= 1).all()
    assert int((y.sum(1) == 1).sum()) >= 50  # every single feature appears (mixtures may repeat a class)
    assert y[:, 5:].sum() == 0  # classes without features never appear


def test_source_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        RoIMixtureSource(torch.zeros(2, 4), torch.tensor([0, 3]), num_classes=3)
