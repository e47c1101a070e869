"""The feature-quality report of a trained generator (:mod:`zsdet.evaluation.feature_quality`).

:func:`assess` synthesizes, in evaluation mode and in the data's units (as the classifier stages
get them), one feature for the label set of every held-out real row, and one for each of
``VAL_SYNTH_SETS`` training label sets for the "train on synthesized, test on real" probe.
:func:`write_report` stores the result as ``feature_quality.json`` and ``feature_quality.png``.
"""
import os
from typing import Dict, Optional, Sequence, Tuple

import torch

from ..data.seeded_rng import QUALITY_KEY, derive_seed
from ..evaluation.feature_quality import (FeatureQuality, plot_feature_quality, real_vs_synthetic_accuracy,
                                          spread_ratio, tstr_map, value_histogram, zero_share)
from ..utils.io import read_json, write_json
from .label_sets import LabelSets

__all__ = ["assess", "write_report", "read_report", "REPORT_JSON", "REPORT_FIGURE"]

REPORT_JSON = "feature_quality.json"
REPORT_FIGURE = "feature_quality.png"


def assess(trainer, real_x: torch.Tensor, real_y: torch.Tensor,
           background: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
           classes: Optional[Sequence[int]] = None) -> FeatureQuality:
    """The report of ``trainer``'s current generator on held-out real features.

    Args:
        trainer: a :class:`~zsdet.synthesis.SynthesisTrainer` with a fitted or loaded generator.
        real_x: (m, d) held-out real features (data units); real_y: (m, C) their multi-hot labels.
        background: optional real background features (probe rows (b, d), held-out rows (b', d)).
        classes: the TSTR probe's classes, each synthesized alone (``VAL_SYNTH_SETS`` features in
            all), e.g. classes the generator never trained on; default: the trainer's seen classes,
            synthesized for ``VAL_SYNTH_SETS`` of its training label sets.
    """
    seed = derive_seed(trainer.s.seed, QUALITY_KEY)
    usable = real_y.gt(0).any(1)
    real_x, real_y = real_x[usable], real_y[usable]
    matched, _ = trainer.synthesize(LabelSets.from_multi_hot(real_y), 1, seed=seed)
    ratio, per_set, sets = spread_ratio(real_x, matched, real_y)
    if classes is None:
        rows = torch.randperm(len(trainer.train_sets), generator=torch.Generator().manual_seed(seed))
        probe_sets, columns = trainer.train_sets[rows[:trainer.s.val_synth_sets]], trainer.seen_classes
    else:
        columns = torch.as_tensor(list(classes))
        probe_sets = LabelSets.from_lists([[c] for c in columns.tolist()], trainer.num_classes).repeat_each(
            max(1, trainer.s.val_synth_sets // len(columns)))
    probe_x, probe_y = trainer.synthesize(probe_sets, 1, seed=derive_seed(seed, 1))
    probe_bg, test_bg = background if background is not None else (None, None)
    tstr = tstr_map(probe_x, probe_y[:, columns], real_x, real_y[:, columns], trainer.s.val_ridge,
                    background_train=probe_bg, background_test=test_bg)
    return FeatureQuality(
        spread_ratio=ratio, real_vs_synth_acc=real_vs_synthetic_accuracy(real_x, matched, seed),
        tstr_ap=100.0 * tstr, zeros_real=zero_share(real_x), zeros_synth=zero_share(matched), num_real=len(real_x),
        histogram=value_histogram(real_x, matched),
        condition_spread={"ratio": per_set.tolist(), "size": sets.sum(1).tolist()})


def write_report(report: FeatureQuality, output_dir: str, title: str = "") -> Dict[str, float]:
    """``output_dir/feature_quality.json`` (the whole report) and ``.png``; returns the summary."""
    write_json(os.path.join(output_dir, REPORT_JSON), {"summary": report.summary(), "histogram": report.histogram,
                                                      "condition_spread": report.condition_spread})
    plot_feature_quality(report, os.path.join(output_dir, REPORT_FIGURE), title)
    return report.summary()


def read_report(output_dir: str) -> Optional[Dict[str, float]]:
    """The summary of ``output_dir/feature_quality.json``, or None when there is none."""
    path = os.path.join(output_dir, REPORT_JSON)
    return read_json(path, "feature-quality report")["summary"] if os.path.isfile(path) else None
