"""QuantileAlignment and ZeroShareAlignment on constructed cases with known answers."""
import pytest
import torch

from zsdet.evaluation.feature_quality import real_vs_synthetic_accuracy
from zsdet.synthesis.alignment import QuantileAlignment, ZeroShareAlignment


def _real(n=4000, d=6, seed=0):
    """Post-ReLU-like features: about half exact zeros, classes in two clusters."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.where(torch.arange(n)[:, None] % 2 == 0, torch.ones(d), -torch.ones(d))
    return torch.relu(centre * 0.5 + torch.randn(n, d, generator=gen)), centre


def test_a_monotone_distortion_is_undone():
    """Synthesized = a monotone function of real values (per dimension) -> the map recovers them."""
    real, _ = _real()
    synth = 3.0 * real + torch.arange(real.shape[1]).float() + 0.5  # offset and scale per dimension
    aligned = QuantileAlignment.fit(synth, real)(synth)
    nonzero = real > 0
    assert torch.allclose(aligned[nonzero], real[nonzero], atol=0.03)
    # the exact zeros of real map from one synthesized value: mid-rank of the tie, inside the zero mass
    assert float(aligned[~nonzero].abs().max()) == 0.0


def test_order_within_a_dimension_is_kept_and_ranges_clamped():
    real, _ = _real()
    synth = torch.sigmoid(real + 1.0)
    alignment = QuantileAlignment.fit(synth, real)
    probe = torch.linspace(-1, 2, 301)[:, None].repeat(1, real.shape[1])
    out = alignment(probe)
    assert bool((out[1:] >= out[:-1] - 1e-6).all())
    assert torch.allclose(out[0], real.min(0).values.float()) and torch.allclose(out[-1], real.max(0).values.float())


def test_features_of_other_classes_keep_their_class_structure():
    """Fitted on one pair of real / synthesized sets, applied to features of a class not in it: a
    common offset of every synthesized feature goes, the class's own shift stays."""
    real, centre = _real()
    offset = torch.tensor([0.7, -0.2, 0.4, 0.9, 0.1, -0.3])
    synth_seen = torch.relu(real + offset)
    alignment = QuantileAlignment.fit(synth_seen, real)
    assert real_vs_synthetic_accuracy(real, synth_seen) > 0.75
    assert real_vs_synthetic_accuracy(real, alignment(synth_seen)) < 0.6
    gen = torch.Generator().manual_seed(1)
    new_class = torch.relu(0.5 * torch.ones(6) * 2 + torch.randn(500, 6, generator=gen))  # a further cluster
    mapped = alignment(torch.relu(new_class + offset))
    seen_mean = real[centre[:, 0] > 0].mean(0)
    assert bool((mapped.mean(0) > seen_mean).all())  # still beyond the seen class along its shift


@pytest.mark.parametrize("alignment_class", [QuantileAlignment, ZeroShareAlignment])
def test_bad_shapes_are_errors(alignment_class):
    with pytest.raises(ValueError, match="\\(n, d\\)"):
        alignment_class.fit(torch.zeros(10, 3), torch.zeros(10, 4))
    with pytest.raises(ValueError, match="at least 2"):
        alignment_class.fit(torch.zeros(1, 3), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="3-d"):
        alignment_class.fit(torch.rand(10, 3), torch.rand(10, 3))(torch.zeros(2, 4))


def test_zeros_come_in_the_real_share_and_nothing_else_moves():
    """Real: dimension j is 0 in a share 0.2 j of the rows (0 for j = 0); synthesized: uniform in
    (0.01, 1), never 0. Aligned: each dimension's share of zeros is the real one (to the quantile
    grid's resolution), the rest of the values are untouched, dimension 0 not at all."""
    gen = torch.Generator().manual_seed(0)
    n, d = 5000, 4
    real = torch.rand(n, d, generator=gen) + 0.1
    for j in range(d):
        real[: int(0.2 * j * n), j] = 0.0
    synth = 0.01 + 0.99 * torch.rand(n, d, generator=gen)
    aligned = ZeroShareAlignment.fit(synth, real)(synth)
    zero_share = (aligned == 0).float().mean(0)
    assert torch.allclose(zero_share, torch.tensor([0.0, 0.2, 0.4, 0.6]), atol=0.01)
    kept = aligned != 0
    assert torch.equal(aligned[kept], synth[kept]) and torch.equal(aligned[:, 0], synth[:, 0])
    zeroed_max = synth.masked_fill(kept, float("-inf")).max(0).values
    assert bool((zeroed_max <= synth.masked_fill(~kept, float("inf")).min(0).values).all())  # the lowest values go


def test_zeros_remove_the_zero_cue_of_a_probe():
    """Real: 60 % exact zeros, the rest in (1, 2); synthesized: the same but with (0.5, 0.6) where real
    has its zeros (the sigmoid's "never 0"). A linear probe tells them apart by that mass; after the
    alignment the two have one distribution and it cannot."""
    gen = torch.Generator().manual_seed(2)
    n, d = 4000, 6
    real = torch.where(torch.rand(n, d, generator=gen) < 0.6, 0.0, 1 + torch.rand(n, d, generator=gen))
    synth = torch.where(torch.rand(n, d, generator=gen) < 0.6, 0.5 + 0.1 * torch.rand(n, d, generator=gen),
                        1 + torch.rand(n, d, generator=gen))
    assert real_vs_synthetic_accuracy(real, synth) > 0.7
    assert real_vs_synthetic_accuracy(real, ZeroShareAlignment.fit(synth, real)(synth)) < 0.6
