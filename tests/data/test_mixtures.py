"""Multi-label RoI mixtures: set sampling and fusion (the streamed source: test_roi_stream.py)."""
import numpy as np
import pytest
import torch

from zsdet.data.mixtures import fuse_mixtures, sample_mixture_sets


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


def test_bad_set_sizes_and_empty_sets_are_refused():
    with pytest.raises(ValueError, match=r"need 1 <= min_size \(3\) <= max_size \(2\)"):
        sample_mixture_sets(5, 1, 3, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty feature set"):
        sample_mixture_sets(0, 1, 2, 3, np.random.default_rng(0))


def test_chunked_fusion_equals_one_call(monkeypatch):
    from zsdet.data import mixtures

    feats, labels = torch.randn(20, 5), torch.randint(0, 4, (20,))
    idx, mask = (torch.from_numpy(a) for a in sample_mixture_sets(20, 23, 2, 3, np.random.default_rng(0)))
    want_x, want_y = fuse_mixtures(feats, labels, idx, mask, num_classes=4)
    monkeypatch.setattr(mixtures, "MIXTURE_CHUNK", 5)  # 5 chunks, the last one short
    out_x, out_y = torch.empty(23, 5), torch.empty(23, 4)
    mixtures.fuse_mixtures_into(feats, labels, idx, mask, out_x, out_y)
    torch.testing.assert_close(out_x, want_x)
    torch.testing.assert_close(out_y, want_y)
