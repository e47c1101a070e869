"""Feature-quality figures on constructed cases with known answers."""
import json

import pytest
import torch

from zsdet.evaluation.feature_quality import (FeatureQuality, condition_spreads, plot_feature_quality,
                                              real_vs_synthetic_accuracy, spread_ratio, tstr_map, value_histogram,
                                              zero_share)

C, D, PER = 6, 16, 80


def labelled_features(seed, shift=0.0, scale=1.0):
    """(C * PER, D) rows around C class means (the same means for every seed), their one-hot labels."""
    means = torch.randn(C, D, generator=torch.Generator().manual_seed(123)) * 3
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(C).repeat_interleave(PER)
    x = means[labels] + scale * torch.randn(len(labels), D, generator=gen) + shift
    return x, torch.nn.functional.one_hot(labels, C).float()


def test_condition_spreads_are_rms_distances_to_the_mean():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0]])
    spreads = condition_spreads(x, torch.tensor([0, 0, 1]), 2)
    assert spreads[0].item() == pytest.approx(1.0)
    assert torch.isnan(spreads[1])  # one row: no spread


def test_same_distribution_is_indistinguishable():
    real, y = labelled_features(0)
    synth, _ = labelled_features(1)
    ratio, per_set, sets = spread_ratio(real, synth, y)
    assert ratio == pytest.approx(1.0, abs=0.1) and len(per_set) == C and sets.shape == (C, C)
    assert 0.4 <= real_vs_synthetic_accuracy(real, synth) <= 0.6


def test_collapsed_generator_has_no_spread():
    real, y = labelled_features(0)
    collapsed, _ = labelled_features(1, scale=1e-3)  # the class means, the noise ignored
    assert spread_ratio(real, collapsed, y)[0] < 0.01
    # points at the class means sit inside the real clouds: a linear probe cannot see the collapse
    # (the spread ratio does), but it sees a collapse away from the real means
    assert real_vs_synthetic_accuracy(real, collapsed) < 0.6
    collapsed_off, _ = labelled_features(1, shift=1.0, scale=1e-3)
    assert spread_ratio(real, collapsed_off, y)[0] < 0.01 and real_vs_synthetic_accuracy(real, collapsed_off) > 0.95


def test_offset_features_are_separable():
    real, y = labelled_features(0)
    offset, _ = labelled_features(1, shift=2.0)
    assert spread_ratio(real, offset, y)[0] == pytest.approx(1.0, abs=0.1)  # spread alone does not see it
    assert real_vs_synthetic_accuracy(real, offset) > 0.95


def test_tstr_with_background_scores_class_against_background():
    real, y = labelled_features(0)
    matched, _ = labelled_features(1)
    background = torch.randn(2 * C * PER, D, generator=torch.Generator().manual_seed(4))
    bg_train, bg_test = background[: C * PER], background[C * PER:]
    with_bg = dict(background_train=bg_train, background_test=bg_test)
    assert tstr_map(matched, y, real, y, **with_bg) > 0.95
    # a generator whose features look like background: real RoIs cannot be told from background
    background_like = torch.randn(C * PER, D, generator=torch.Generator().manual_seed(6)) + 0.02 * real
    assert tstr_map(background_like, y, real, y, **with_bg) < 0.6


def test_tstr_without_background_is_the_ridge_probe_map():
    real, y = labelled_features(0)
    synth, _ = labelled_features(1)
    assert tstr_map(synth, y, real, y) == pytest.approx(1.0, abs=1e-6)  # well separated classes


def test_zero_share_and_histogram():
    real = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    synth = torch.tensor([[0.5, 1.0], [2.0, 3.0]])
    assert zero_share(real) == 0.5 and zero_share(synth) == 0.0
    hist = value_histogram(real, synth, bins=4)
    assert len(hist["edges"]) == 5 and sum(hist["real"]) == pytest.approx(1.0) and sum(hist["synth"]) == pytest.approx(1.0)


def test_report_figure_and_summary(tmp_path):
    real, y = labelled_features(0)
    synth, _ = labelled_features(1)
    ratio, per_set, sets = spread_ratio(real, synth, y)
    report = FeatureQuality(ratio, real_vs_synthetic_accuracy(real, synth), 100 * tstr_map(synth, y, real, y),
                            zero_share(real), zero_share(synth), len(real), value_histogram(real, synth),
                            {"ratio": per_set.tolist(), "size": sets.sum(1).tolist()})
    plot_feature_quality(report, str(tmp_path / "fq.png"), "test")
    assert (tmp_path / "fq.png").stat().st_size > 1000
    assert set(report.summary()) == {"spread_ratio", "real_vs_synth_acc", "tstr_ap", "zeros_real", "zeros_synth",
                                     "num_real"}
    json.dumps(report.summary())
