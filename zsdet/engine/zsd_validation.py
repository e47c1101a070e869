"""The pseudo-unseen validation protocol: choose settings on seen classes held out of generator training.

Settings of the synthesis method (generator, epochs, classifier recipe, calibration) must be chosen
without unseen test objects. The protocol uses the training images only (an RoI bank of the seen
detector): ``num_pseudo`` seen classes are held out as *pseudo-unseen* (drawn per split seed), a
share of the images is set aside as *validation images*, and the pipeline's own code runs on the
rest: the generator is trained on the other seen classes (its own selection split and background
probe as in stage 4), the box classifier (:func:`~.synthesis_classifier.train_synthesis_classifier`)
on their real RoIs and the synthesized pseudo-unseen features. The validation images' RoIs then
score it at the RoI level, the true unseen columns left out:

* ``pzsd_map``: ZSD mAP (percent) of the pseudo-unseen classes, every RoI ranked by its
  [pseudo-unseen, background] softmax (seen objects and background are the negatives);
* ``gzsd_hm_map`` (and ``gzsd_seen_map`` / ``gzsd_unseen_map``): GZSD mAP under the configured
  scoring (:func:`~zsdet.modeling.zsd_predictor.gzsd_probs`), harmonic mean of the two groups;
* ``top1_unseen_as_seen`` / ``top1_seen_correct``: percent of the pseudo-unseen RoIs whose top-1
  class is a seen class, and of the seen RoIs whose top-1 class is right;
* ``pseudo_unseen_quality``: the feature-quality report of the pseudo-unseen classes (real RoIs of
  the validation images against synthesized features), ``seen_quality`` that of the seen classes.

The pseudo-unseen classes were seen by the detector, so their RoI features separate better than
those of real unseen classes, and the protocol can rank settings the wrong way for classes the
detector never saw (it did for the output activation, docs/feature_quality.md): choices about the
unseen classes belong on the validation worlds of ``benchmarks/zsd_held_out_validation.py``, which
train their own detector without the held-out classes. This protocol is cheaper (one shared bank)
and remains useful for what the detector does not affect, e.g. collapse or epoch curves.
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..data.feature_bank import FeatureBank
from ..data.seeded_rng import derive_seed
from ..data.zsd_split import ZeroShotSplit
from ..evaluation import average_precision_per_label
from ..modeling.zsd_predictor import gzsd_probs
from ..synthesis.quality import assess
from .roi_stages import generator_source, synthesis_trainer, validation_background
from .synthesis_classifier import train_synthesis_classifier

__all__ = ["PseudoUnseenSplit", "pseudo_unseen_split", "roi_level_metrics", "run_protocol"]

PSEUDO_KEY = 7  # derive_seed key of the pseudo-unseen split of a split seed


@dataclass
class PseudoUnseenSplit:
    """seen_ids: classes the generator trains on; pseudo_unseen_ids: held-out seen classes;
    validation_images: image ids scored (never trained on); generator_validation_images: the
    generator's selection images (also the classifier's calibration images)."""

    seen_ids: List[int]
    pseudo_unseen_ids: List[int]
    validation_images: np.ndarray
    generator_validation_images: np.ndarray


def pseudo_unseen_split(bank: FeatureBank, split: ZeroShotSplit, num_pseudo: int, split_seed: int,
                        validation_fraction: float, generator_val_fraction: float) -> PseudoUnseenSplit:
    """Draw the pseudo-unseen classes and the two image sets from ``split_seed`` (images with a
    foreground RoI; ``validation_fraction`` of them scored, ``generator_val_fraction`` of the rest
    for the generator's selection)."""
    if not 0 < num_pseudo < len(split.seen_ids):
        raise ValueError(f"--num-pseudo must be in [1, {len(split.seen_ids) - 1}] (the split has "
                         f"{len(split.seen_ids)} seen classes), got {num_pseudo}")
    rng = np.random.default_rng(derive_seed(split_seed, PSEUDO_KEY))
    pseudo = np.sort(rng.choice(np.asarray(split.seen_ids), num_pseudo, replace=False))
    images = np.unique(bank.image_ids[bank.labels < bank.num_classes])
    scored = rng.choice(images, int(round(validation_fraction * len(images))), replace=False)
    rest = np.setdiff1d(images, scored)
    generator_val = rng.choice(rest, int(round(generator_val_fraction * len(rest))), replace=False)
    return PseudoUnseenSplit([c for c in split.seen_ids if c not in set(pseudo.tolist())], pseudo.tolist(),
                             np.sort(scored), np.sort(generator_val))


def _mean_ap(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """Percent mAP over the columns with a positive."""
    ap = average_precision_per_label(scores.numpy(), positives.numpy().astype(np.float32))
    return 100.0 * float(np.nanmean(ap))


def roi_level_metrics(logits: torch.Tensor, labels: torch.Tensor, seen_ids: Sequence[int],
                      unseen_ids: Sequence[int], scoring: str, seen_thresh: float) -> Dict[str, float]:
    """The protocol's RoI-level figures (module docstring) of classifier ``logits`` (n, C + 1) on
    RoIs with ``labels`` (n,) (``C`` = background); columns of neither group are left out."""
    num_cols = logits.shape[1]
    seen, unseen = torch.as_tensor(list(seen_ids)), torch.as_tensor(list(unseen_ids))
    present = torch.zeros(num_cols, dtype=torch.bool)
    present[seen], present[unseen], present[-1] = True, True, True
    logits = logits.masked_fill(~present, float("-inf"))
    unseen_mask = torch.zeros(num_cols, dtype=torch.bool)
    unseen_mask[unseen] = True
    onehot = torch.zeros(len(labels), num_cols)
    onehot[torch.arange(len(labels)), labels] = 1
    zsd = torch.softmax(logits.masked_fill(~(unseen_mask | (torch.arange(num_cols) == num_cols - 1)),
                                           float("-inf")), 1)
    probs = gzsd_probs(logits, unseen_mask & present, scoring, 0.0, seen_thresh)
    seen_map, unseen_map = _mean_ap(probs[:, seen], onehot[:, seen]), _mean_ap(probs[:, unseen], onehot[:, unseen])
    top = probs[:, :-1].argmax(1)
    is_unseen, is_seen = torch.isin(labels, unseen), torch.isin(labels, seen)
    return {"pzsd_map": _mean_ap(zsd[:, unseen], onehot[:, unseen]), "gzsd_seen_map": seen_map,
            "gzsd_unseen_map": unseen_map,
            "gzsd_hm_map": 2 * seen_map * unseen_map / (seen_map + unseen_map) if seen_map + unseen_map else 0.0,
            "top1_unseen_as_seen": 100.0 * float(torch.isin(top[is_unseen], seen).double().mean()),
            "top1_seen_correct": 100.0 * float((top[is_seen] == labels[is_seen]).double().mean()),
            "bg_prob_on_unseen": float(zsd[is_unseen, -1].mean())}


def run_protocol(cfg, bank: FeatureBank, split: ZeroShotSplit, pseudo: PseudoUnseenSplit, output_dir: str,
                 detector_weights: str, score_epochs: Sequence[int] = (),
                 classifier_variants: Optional[Dict[str, Sequence[str]]] = None) -> List[Dict]:
    """Train a generator on ``pseudo.seen_ids`` and score the retrained classifier (module docstring).

    Args:
        cfg: the candidate's config (``SYNTHESIS``, ``ZSD.CLASSIFIER``, ``MODEL.ZSD`` scoring).
        score_epochs: also score the generator after these epochs (0-based), besides the selected
            one at the end (``"epoch": "selected"``).
        classifier_variants: ``{name: [KEY, VALUE, ...]}`` config overrides of the classifier stage,
            each scored on the same generators (default: the candidate's own, named ``""``).
    Returns:
        the results, one dict per (scored generator, classifier variant).
    """
    variants = {name: _with_overrides(cfg, opts) for name, opts in (classifier_variants or {"": []}).items()}
    scored = np.isin(bank.image_ids, pseudo.validation_images)
    in_generator_val = np.isin(bank.image_ids, pseudo.generator_validation_images)
    fg = np.isin(bank.labels, pseudo.seen_ids) & ~scored
    train_rows, val_rows = np.nonzero(fg & ~in_generator_val)[0], np.nonzero(fg & in_generator_val)[0]
    s = cfg.SYNTHESIS
    val = generator_source(cfg, bank, val_rows)
    background = validation_background(cfg, bank, val_rows, s.VAL_SYNTH_SETS, min(len(val_rows), s.VAL_MAX_SAMPLES),
                                       exclude_images=pseudo.validation_images)
    trainer = synthesis_trainer(cfg, split.class_names, bank.feature_dim, os.path.join(output_dir, "generator"))
    rows = np.nonzero(scored)[0]
    x_scored = torch.from_numpy(bank.load(rows))
    y_scored = torch.from_numpy(bank.labels[rows].astype(np.int64))
    results = []

    def score(epoch) -> None:
        quality = {}
        is_bg = y_scored == bank.num_classes
        for tag, ids in (("pseudo_unseen_quality", pseudo.pseudo_unseen_ids), ("seen_quality", pseudo.seen_ids)):
            mask = torch.isin(y_scored, torch.as_tensor(ids))
            onehot = torch.zeros(int(mask.sum()), split.num_classes)
            onehot[torch.arange(len(onehot)), y_scored[mask]] = 1
            quality[tag] = assess(trainer, x_scored[mask], onehot, (background[0], x_scored[is_bg]), ids).summary()
        for name, variant in variants.items():
            classifier, record = train_synthesis_classifier(
                variant, bank, trainer, pseudo.seen_ids, pseudo.pseudo_unseen_ids, pseudo.generator_validation_images,
                detector_weights, excluded_images=pseudo.validation_images)
            with torch.no_grad():
                logits = classifier(x_scored)
            z = variant.MODEL.ZSD
            results.append({"epoch": epoch, "variant": name,
                            **roi_level_metrics(logits, y_scored, pseudo.seen_ids, pseudo.pseudo_unseen_ids,
                                                z.GZSD_SCORING, z.GZSD_SEEN_THRESH),
                            "seen_logit_bias": record.get("gzsd_calibration", {}).get("seen_logit_bias", 0.0),
                            **quality})

    trainer.fit(generator_source(cfg, bank, train_rows, cfg.ZSD.FEATURES.SAMPLES_PER_EPOCH), val, background,
                epoch_callback=lambda epoch: score(epoch) if epoch in set(score_epochs) else None)
    score("selected")
    return results


def _with_overrides(cfg, opts: Sequence[str]):
    """A frozen copy of ``cfg`` with ``opts`` (KEY VALUE ...) merged."""
    variant = cfg.clone()
    variant.defrost()
    variant.merge_from_list(list(opts))
    variant.freeze()
    return variant
