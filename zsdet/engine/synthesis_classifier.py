"""Stage 6 of the synthesis method: the box classifier retrained on real and synthesized RoI features.

:func:`train_synthesis_classifier` returns ``nn.Linear(d, C + 1)`` (the generator's C classes,
background last; with ``HIDDEN_UNITS`` h > 0 a head with h hidden ReLU units, below) and a record of
how it was built, for the pipeline (``classifier`` stage), :func:`~zsdet.engine.add_classes.add_classes`
and the validation benchmark.

Training set (``ZSD.CLASSIFIER``; no row of the validation images, which calibrate it):

* real: seen RoI features (``REAL_PER_CLASS`` per class), background (``BG_PER_FG`` per
  foreground row) and mixtures of 2-3 seen RoIs (``MIXTURE_RATIO`` per row), as the generator saw;
* synthesized: ``SYNTHESIS.NUM_PER_CLASS`` features of every unseen class alone and, with
  ``UNSEEN_MIXTURES``, ``MIXTURE_RATIO`` times as many multi-label features of label sets with
  unseen classes (unseen-only and seen + unseen), drawn from the real sets by the paper's label
  sampling (``SYNTHESIS.LABEL_SAMPLING``, :func:`~zsdet.synthesis.sample_label_sets`): the
  classifier meets unseen classes inside mixtures as it meets seen ones.

Head (``HIDDEN_UNITS``): 0 keeps the paper's linear head; h > 0 trains one hidden layer of h ReLU
units the same way (:func:`~zsdet.modeling.mlp_classifier.build_box_head`; evaluated with ``MODEL.ZSD.CLASSIFIER`` ``"mlp"``,
which the pipeline sets itself). Bias folding and calibration act on its output layer's bias. With
``HIDDEN_GROUPS`` ``"seen"`` a linear head and such an MLP are both trained on the same rows and
combined into a :class:`~zsdet.modeling.SeenGroupMLPClassifier` (grouped scoring's seen group from the
MLP, its unseen group from the linear head; ``"seen_mlp"``). ``SEEN_GROUP_LOSS`` ``"grouped"`` trains
that MLP with the seen group's loss alone (:func:`~zsdet.engine.box_classifier.seen_group_cross_entropy`:
the [seen, background] softmax, a synthesized unseen row background to it); ``"joint"`` with the
linear head's; ``"real"`` with the seen group's loss on the real rows alone (no synthesized row reaches
that MLP: what the seen group knows of unseen objects without them).
``SEEN_GROUP_NEGATIVES`` r > 0 adds, to that MLP's rows only, r real mixtures of 2-3 seen RoIs of
two or more classes per real single-label seen row (:func:`seen_group_negatives`), each with the real
share of exact zeros per dimension and background as its target: the space between the seen classes,
where real unseen objects may lie, is background to the seen group instead of seen (the paper's real
mixtures, ``MIXTURE_RATIO``, teach the opposite). ``SEEN_GROUP_FOLDS`` M >= 2 (with the grouped seen loss)
trains that MLP as M MLPs (:class:`~zsdet.modeling.SeenGroupMLPs`), MLP m with the m-th fold of the seen
classes' real RoIs as background: real objects of classes it does not know, where the synthesized unseen
rows only imitate them; ``SEEN_GROUP_ENSEMBLE`` M trains M MLPs that know every seen class (an ensemble).

Recipes (``RECIPE``): ``"joint"`` trains all columns together with soft-target cross-entropy
(:func:`~zsdet.engine.box_classifier.fit_box_classifier`), under ``LOSS`` ``"joint"`` (one softmax)
or ``"grouped"`` (the two softmaxes of grouped GZSD scoring,
:func:`~zsdet.engine.box_classifier.grouped_cross_entropy`); ``"suzod"`` is SUZOD's (protocol §7-8):
a separate [unseen, background] classifier trained on the synthesized unseen features and
``2 x NUM_PER_CLASS`` real background RoIs (cross-entropy, Adam 1e-4, betas (0.5, 0.999), batch 32,
15 epochs), whose unseen rows replace the detector's and whose background row is blended with the
detector's (0.35 detector, 0.65 new); the seen rows stay the stage-1 detector's.

Alignment (``ALIGN_SYNTHESIZED``): before training, every synthesized feature is mapped by a
:class:`~zsdet.synthesis.alignment.QuantileAlignment` (``"quantile"``: every value's distribution) or
a :class:`~zsdet.synthesis.alignment.ZeroShareAlignment` (``"zeros"``: the share of exact zeros only)
fitted on the real seen (and mixed) training features against features synthesized for their label
sets, so that "synthesized" is no cue of the unseen columns; the record gives the real-vs-synthesized
probe accuracy on the validation images' seen RoIs before and after it.

Anchoring (``ANCHOR_SYNTHESIZED``, :func:`anchor_synthesized`): every synthesized feature G(L, z) becomes
a real training RoI x_s of a seen class s (among the ``ANCHOR_NEAREST`` seen classes nearest L's mean
embedding) plus ``G(L, z) - G({s}, z)`` under the same noise (both aligned first, with an alignment),
clamped to the real features' range: the unseen rows keep a real RoI's traits and move only its class
(:mod:`zsdet.synthesis.anchoring`); with ``ANCHOR_ZEROS`` they then get the real share of exact zeros.

Seen group (``SEEN_ROWS`` ``"detector"``): after training, the seen rows are rebuilt from the seen
detector's box classifier so that every seen logit minus the background logit is the detector's
(:func:`keep_detector_seen_group`): grouped GZSD scoring's [seen, background] softmax is then the
seen detector's own, while the [unseen, background] softmax (ZSD, GZSD's unseen group) stays the
retrained one. ``"retrained"`` (default) keeps the jointly trained rows.

Distillation (``SEEN_DISTILLATION`` w > 0, recipe ``"joint"``): the target of every real
single-label training row (a seen RoI or background) becomes ``(1 - w) x`` its one-hot ``+ w x``
the seen detector's softmax over the seen classes and background on the same feature
(:func:`detector_distilled_targets`): the retrained classifier learns the detector's seen-vs-seen
and seen-vs-background ranking instead of only its labels. Mixtures and synthesized rows keep their
targets. (Not adopted in the sixteenth validation round: the seen classes were not what the retrained
classifier confused; docs/feature_quality.md.)

Unseen-logit bias (``UNSEEN_LOGIT_BIAS`` u): ``u`` added to the unseen rows' biases after training
(:func:`~.gzsd_calibration.fold_unseen_bias`): the odds of each unseen class against background times
``e^u`` in ZSD and in GZSD's unseen group.

Calibration (``SEEN_ACCURACY_BUDGET`` > 0): :mod:`.gzsd_calibration` on the validation images' real
seen RoIs, folded into the seen biases; the budget counts from the classifier before ``u``, or with
``CALIBRATION_REFERENCE`` ``"detector"`` from the seen detector's box classifier on the same RoIs (the
seen bias may then be negative, down to ``MIN_SEEN_LOGIT_BIAS``).
"""
import functools
import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..data.feature_bank import FeatureBank
from ..data.mixtures import fuse_mixtures_into, sample_mixture_sets
from ..data.seeded_rng import (ALIGNMENT_KEY, ANCHOR_KEY, CALIBRATION_KEY, NEGATIVES_KEY, QUALITY_KEY, UNSEEN_SETS_KEY,
                               derive_seed)
from ..evaluation.feature_quality import real_vs_synthetic_accuracy
from ..modeling.mlp_classifier import SeenGroupMLPClassifier, SeenGroupMLPs, build_box_head, seen_group_layout
from ..synthesis import LabelSets, SynthesisTrainer, sample_label_sets
from ..synthesis.alignment import ALIGNMENT_CLASSES, ZeroShareAlignment
from ..synthesis.anchoring import anchor_classes, anchor_rows, anchored_features
from .box_classifier import (fit_box_classifier, group_cross_entropy, grouped_cross_entropy, seen_group_cross_entropy,
                             soft_targets)
from .checkpoints import CLASSIFIER_PREFIX, load_state_dict_file
from .gzsd_calibration import (choose_seen_bias, detector_logits, fold_seen_bias, fold_unseen_bias,
                               seen_columns_top1, seen_roi_labels, top1_accuracy)
from .roi_stages import real_training_set, synthesized_set

__all__ = ["RECIPES", "LOSSES", "SEEN_GROUP_LOSSES", "ALIGNMENTS", "SEEN_ROWS", "SUZOD_RECIPE", "anchor_synthesized",
           "fit_alignment", "detector_head", "detector_distilled_targets", "keep_detector_seen_group",
           "seen_group_negatives", "train_synthesis_classifier", "unseen_mixture_sets", "widen_labels"]

logger = logging.getLogger(__name__)

RECIPES = ("joint", "suzod")
LOSSES = ("joint", "grouped")  # ZSD.CLASSIFIER.LOSS of recipe "joint"
SEEN_GROUP_LOSSES = ("joint", "grouped", "real")  # ZSD.CLASSIFIER.SEEN_GROUP_LOSS (HIDDEN_GROUPS "seen")
ALIGNMENTS = ("none", *ALIGNMENT_CLASSES)
SEEN_ROWS = ("retrained", "detector")  # ZSD.CLASSIFIER.SEEN_ROWS
HIDDEN_GROUPS = ("all", "seen")  # ZSD.CLASSIFIER.HIDDEN_GROUPS
# SUZOD's unseen classifier (docs/zsd_protocol.md §7-8)
SUZOD_RECIPE = {"lr": 1e-4, "betas": (0.5, 0.999), "batch_size": 32, "epochs": 15, "background_per_class": 2,
                "detector_background_share": 0.35}


def box_classifier_kind(cfg) -> str:
    """The ``MODEL.ZSD.CLASSIFIER`` the retrained box classifier is evaluated with: ``"linear"``;
    with ``ZSD.CLASSIFIER.HIDDEN_UNITS`` > 0 ``"mlp"``, or ``"seen_mlp"`` with ``HIDDEN_GROUPS`` ``"seen"``."""
    c = cfg.ZSD.CLASSIFIER
    if c.HIDDEN_UNITS <= 0:
        return "linear"
    return "seen_mlp" if c.HIDDEN_GROUPS == "seen" else "mlp"


def widen_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label weights (n, K + 1), background last, with zero columns inserted before the background
    column up to (n, num_classes + 1)."""
    extra = num_classes + 1 - y.shape[1]
    return torch.cat([y[:, :-1], y.new_zeros(len(y), extra), y[:, -1:]], 1) if extra else y


def unseen_mixture_sets(cfg, real_sets: LabelSets, class_embeddings: torch.Tensor, seen_ids: Sequence[int],
                        unseen_ids: Sequence[int], num: int, seed: int) -> LabelSets:
    """``num`` label sets of 2+ classes with at least one unseen class, drawn from the paper's label
    sampling of ``real_sets`` (unseen-only sets and seen + unseen sets; ``SYNTHESIS.LABEL_SAMPLING``)."""
    ls = cfg.SYNTHESIS.LABEL_SAMPLING
    sets = sample_label_sets(real_sets, class_embeddings, seen_ids, unseen_ids, seen_fraction=0.0,
                             unseen_fraction=ls.UNSEEN_FRACTION, mixed_fraction=ls.MIXED_FRACTION,
                             mixed_keep_seen=ls.MIXED_KEEP_SEEN, rounds=ls.ROUNDS, seed=seed)
    multi = sets[torch.nonzero(sets.sizes() >= 2)[:, 0]]
    if not len(multi):
        raise ValueError("ZSD.CLASSIFIER.UNSEEN_MIXTURES: the label sampling gave no set of two or more classes "
                         "(are there real mixtures, ZSD.CLASSIFIER.MIXTURE_RATIO > 0?)")
    gen = torch.Generator().manual_seed(seed)
    return multi[torch.randint(len(multi), (num,), generator=gen)]


def probe_rows(cfg, bank: FeatureBank, seen_ids: Sequence[int], held_out: np.ndarray, num_classes: int,
               seed: int) -> Tuple[np.ndarray, torch.Tensor]:
    """The seen RoIs of the ``held_out`` (bool per bank row) images that a real-vs-synthesized probe
    compares against: up to ``SYNTHESIS.VAL_MAX_SAMPLES`` sorted bank rows drawn with ``seed``, and their
    one-hot labels (n, ``num_classes``); none when fewer than 4 exist."""
    rows = np.nonzero(held_out & np.isin(bank.labels, seen_ids))[0]
    if len(rows) < 4:
        rows = rows[:0]
    else:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, min(len(rows), cfg.SYNTHESIS.VAL_MAX_SAMPLES), replace=False))
    labels = torch.from_numpy(bank.labels[rows].astype(np.int64))
    return rows, torch.nn.functional.one_hot(labels, num_classes)


def single_label_rows(x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The rows of ``x`` (n, d) whose labels ``y`` (n, C + 1) are one seen class (no mixture, no
    background): (m, d) features and their (m,) int64 classes."""
    single = ((y[:, :-1] > 0).sum(1) == 1) & (y[:, -1] == 0)
    return x[single], y[single, :-1].argmax(1)


def fit_alignment(cfg, bank: FeatureBank, trainer: SynthesisTrainer, x: torch.Tensor, y: torch.Tensor,
                  seen_ids: Sequence[int], held_out: np.ndarray) -> Tuple[Callable, Dict]:
    """The ``ALIGN_SYNTHESIZED`` alignment (module docstring) fitted on the foreground rows of the real
    training set ``x`` (n, d) / ``y`` (n, C + 1) and features synthesized for their label sets; with its record:
    rows fitted on and the real-vs-synthesized probe accuracy on up to ``SYNTHESIS.VAL_MAX_SAMPLES``
    seen RoIs of the ``held_out`` (bool per bank row) images, before and after, with the share of
    exact zeros of those real RoIs and of their synthesized counterparts after the alignment."""
    fg = y[:, :-1].sum(1) > 0
    seed = derive_seed(cfg.SEED, ALIGNMENT_KEY)
    synth, _ = trainer.synthesize(LabelSets.from_multi_hot(y[fg, :-1]), 1, seed=seed)
    method = cfg.ZSD.CLASSIFIER.ALIGN_SYNTHESIZED
    alignment = ALIGNMENT_CLASSES[method].fit(synth, x[fg])
    record = {"method": method, "fit_rows": int(fg.sum())}
    rows, one_hot = probe_rows(cfg, bank, seen_ids, held_out, trainer.num_classes, derive_seed(seed, 1))
    if len(rows):
        matched, _ = trainer.synthesize(LabelSets.from_multi_hot(one_hot), 1, seed=derive_seed(seed, 2))
        real = torch.from_numpy(bank.load(rows))
        probe_seed = derive_seed(cfg.SEED, QUALITY_KEY)
        aligned = alignment(matched)
        record.update(probe_rows=len(rows),
                      real_vs_synth_acc_before=real_vs_synthetic_accuracy(real, matched, probe_seed),
                      real_vs_synth_acc_after=real_vs_synthetic_accuracy(real, aligned, probe_seed),
                      zeros_real=float((real == 0).double().mean()), zeros_after=float((aligned == 0).double().mean()))
    logger.info("box classifier: %s alignment of synthesized features fitted on %d real training rows; %s",
                method, record["fit_rows"],
                {k: round(v, 3) for k, v in record.items() if k.startswith(("real_vs", "zeros"))})
    return alignment, record


def anchor_synthesized(cfg, bank: FeatureBank, trainer: SynthesisTrainer, x: torch.Tensor, y: torch.Tensor,
                       syn_x: torch.Tensor, syn_y: torch.Tensor, parts: Sequence[Tuple[int, int]],
                       seen_ids: Sequence[int], alignment: Optional[Callable], held_out: np.ndarray
                       ) -> Tuple[torch.Tensor, Dict]:
    """``ANCHOR_SYNTHESIZED`` (:mod:`zsdet.synthesis.anchoring`): the synthesized rows ``syn_x`` (n, d) of
    the label sets ``syn_y`` (n, C + 1) become ``clamp(x_s + A(G(L, z)) - A(G({s}, z)))`` on real rows of
    ``x`` / ``y`` (the real training set) of one seen class, within the range of ``x``; A is the
    ``alignment`` (or none). ``parts``: (rows, noise seed) of each synthesis call that made ``syn_x``, in
    order, so that every anchor feature is synthesized with its row's noise. With ``ANCHOR_ZEROS`` the
    anchored rows then get the real share of exact zeros per dimension (a
    :class:`~zsdet.synthesis.alignment.ZeroShareAlignment` fitted on the real training rows against
    anchored features of their classes).

    The record gives the real-vs-anchored probe accuracy: up to ``SYNTHESIS.VAL_MAX_SAMPLES`` seen RoIs of
    the ``held_out`` (bool per bank row) images against anchored features of their classes."""
    c = cfg.ZSD.CLASSIFIER
    real, real_classes = single_label_rows(x, y)
    embeddings = trainer.generator.class_embeddings.detach().cpu()
    low, high = x.min(0).values, x.max(0).values

    def anchored(multi_hot: torch.Tensor, synthesized: torch.Tensor, calls: Sequence[Tuple[int, int]],
                 gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        classes = anchor_classes(multi_hot, embeddings, seen_ids, c.ANCHOR_NEAREST, gen)
        rows = anchor_rows(classes, real_classes, gen)
        one_hot = torch.nn.functional.one_hot(classes, trainer.num_classes)
        bounds = np.cumsum([0] + [n for n, _ in calls])
        anchors = torch.cat([trainer.synthesize(LabelSets.from_multi_hot(one_hot[a:b]), 1, seed=seed)[0]
                             for a, b, (_, seed) in zip(bounds[:-1], bounds[1:], calls)])
        if alignment is not None:
            synthesized, anchors = alignment(synthesized), alignment(anchors)
        return anchored_features(real[rows], synthesized, anchors, low, high), classes

    def synthesized_and_anchored(multi_hot: torch.Tensor, seed: int) -> torch.Tensor:
        synthesized, _ = trainer.synthesize(LabelSets.from_multi_hot(multi_hot), 1, seed=seed)
        return anchored(multi_hot, synthesized, [(len(multi_hot), seed)], torch.Generator().manual_seed(seed))[0]

    seed = derive_seed(cfg.SEED, ANCHOR_KEY)
    out, classes = anchored(syn_y[:, :-1], syn_x, parts, torch.Generator().manual_seed(seed))
    zeros = None
    if c.ANCHOR_ZEROS:  # fitted on the real training rows against anchored features of their classes
        seen_anchored = synthesized_and_anchored(torch.nn.functional.one_hot(real_classes, trainer.num_classes),
                                                 derive_seed(seed, 3))
        zeros = ZeroShareAlignment.fit(seen_anchored, real)
        out = zeros(out)
    record = {"rows": len(out), "nearest": c.ANCHOR_NEAREST, "zeros_matched": c.ANCHOR_ZEROS, "real_rows": len(real),
              "anchor_classes": int(classes.unique().numel()), "zeros_real": float((real == 0).double().mean()),
              "zeros_anchored": float((out == 0).double().mean())}
    probe, one_hot = probe_rows(cfg, bank, seen_ids, held_out, trainer.num_classes, derive_seed(seed, 1))
    if len(probe):
        matched = synthesized_and_anchored(one_hot, derive_seed(seed, 2))
        matched = matched if zeros is None else zeros(matched)
        record.update(probe_rows=len(probe), real_vs_anchored_acc=real_vs_synthetic_accuracy(
            torch.from_numpy(bank.load(probe)), matched, derive_seed(cfg.SEED, QUALITY_KEY)))
    logger.info("box classifier: %d synthesized features anchored on real RoIs of %d seen classes "
                "(zeros: real %.3f, anchored %.3f; real-vs-anchored probe %s)", len(out), record["anchor_classes"],
                record["zeros_real"], record["zeros_anchored"], record.get("real_vs_anchored_acc"))
    return out, record


def seen_group_negatives(cfg, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict]:
    """``SEEN_GROUP_NEGATIVES`` r: mixtures (the means of ``ZSD.MIXTURES.MIN_SET_SIZE`` to ``MAX_SET_SIZE``
    random rows) of the real single-label seen rows of ``x`` (n, d) / ``y`` (n, C + 1), r per such row,
    those of one class dropped, then given the real rows' share of exact zeros per dimension
    (:class:`~zsdet.synthesis.alignment.ZeroShareAlignment`: a mean of sparse rows is denser).

    Returns:
        (m, d) features, (m, C + 1) targets all on background, record (rows drawn and kept, zero shares)."""
    m = cfg.ZSD.MIXTURES
    real, classes = single_label_rows(x, y)
    num = int(cfg.ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES * len(real))
    if num == 0:
        raise ValueError("ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES: no real single-label seen row to mix")
    idx, mask = sample_mixture_sets(len(real), num, max(m.MIN_SET_SIZE, 2), m.MAX_SET_SIZE,
                                    np.random.default_rng(derive_seed(cfg.SEED, NEGATIVES_KEY)))
    mixed, multi_hot = torch.empty(num, x.shape[1]), torch.empty(num, y.shape[1])
    fuse_mixtures_into(real, classes, torch.from_numpy(idx), torch.from_numpy(mask), mixed, multi_hot)
    mixed = mixed[multi_hot.sum(1) >= 2]
    if len(mixed) < 2:
        raise ValueError("ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES: fewer than 2 mixtures of two or more seen classes "
                         f"({len(mixed)} of {num}; are there several seen classes with real rows?)")
    zeros_before = float((mixed == 0).double().mean())
    mixed = ZeroShareAlignment.fit(mixed, real)(mixed)
    targets = torch.zeros(len(mixed), y.shape[1])
    targets[:, -1] = 1
    record = {"drawn": num, "rows": len(mixed), "zeros_real": float((real == 0).double().mean()),
              "zeros_before": zeros_before, "zeros_after": float((mixed == 0).double().mean())}
    logger.info("box classifier: %d real mixtures of two or more seen classes as background to the seen group "
                "(zeros: real %.3f, mixtures %.3f -> %.3f)", len(mixed), record["zeros_real"], zeros_before,
                record["zeros_after"])
    return mixed, targets, record


def detector_head(cfg, detector_weights: Optional[str]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """(weight (K + 1, d), bias (K + 1,)) float32 of the seen detector's box classifier, background
    last, when a setting of ``ZSD.CLASSIFIER`` needs it (recipe ``suzod``, ``SEEN_ROWS`` ``detector``,
    ``SEEN_DISTILLATION`` > 0, a calibration with ``CALIBRATION_REFERENCE`` ``detector``), else None;
    read once, before training."""
    c = cfg.ZSD.CLASSIFIER
    needed_by = [key for key, wanted in (("RECIPE 'suzod'", c.RECIPE == "suzod"),
                                         ("SEEN_ROWS 'detector'", c.SEEN_ROWS == "detector"),
                                         (f"SEEN_DISTILLATION {c.SEEN_DISTILLATION}", c.SEEN_DISTILLATION > 0),
                                         ("CALIBRATION_REFERENCE 'detector'",
                                          c.SEEN_ACCURACY_BUDGET > 0 and c.CALIBRATION_REFERENCE == "detector"))
                 if wanted]
    if not needed_by:
        return None
    if detector_weights is None:
        raise ValueError(f"ZSD.CLASSIFIER.{needed_by[0]} needs the seen detector's weights")
    state = load_state_dict_file(detector_weights)
    return state[CLASSIFIER_PREFIX + "weight"].float(), state[CLASSIFIER_PREFIX + "bias"].float()


@torch.no_grad()
def detector_distilled_targets(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                               unseen_ids: Sequence[int], distillation: float) -> torch.Tensor:
    """Soft targets (n, C + 1) of the real training rows ``x`` (n, d) with label weights ``y``
    (n, C + 1, background last): rows of one label (a seen RoI, background) get ``(1 - distillation)
    x`` their one-hot ``+ distillation x`` the softmax of the detector's box classifier (``weight``
    (K + 1, d), ``bias`` (K + 1,), background last) over its seen classes and background, 0 on the
    unseen columns; rows of several labels (mixtures) keep :func:`soft_targets` of ``y``."""
    targets = soft_targets(y)
    single = torch.nonzero((y > 0).sum(1) == 1)[:, 0]
    for rows in single.split(1 << 14):  # bounded (rows, C + 1) blocks
        teacher = torch.softmax(detector_logits(weight, bias, x[rows], y.shape[1], unseen_ids), 1)
        targets[rows] = (1 - distillation) * targets[rows] + distillation * teacher
    return targets


@torch.no_grad()
def keep_detector_seen_group(classifier: nn.Linear, weight: torch.Tensor, bias: torch.Tensor, seen_ids: Sequence[int]
                             ) -> None:
    """Rebuild the seen rows of ``classifier`` (C + 1 outputs, background last) in place so that
    seen row minus background row equals the detector's (``weight`` (K + 1, d), ``bias`` (K + 1,),
    background last), for weights and biases alike: every seen logit minus the background logit is
    then the detector's on any feature."""
    seen = list(seen_ids)
    classifier.weight[seen] = weight[seen] - weight[-1] + classifier.weight[-1]
    classifier.bias[seen] = bias[seen] - bias[-1] + classifier.bias[-1]


def _suzod_classifier(cfg, head: Tuple[torch.Tensor, torch.Tensor], bank: FeatureBank, syn_x: torch.Tensor,
                      syn_y: torch.Tensor, unseen_ids: Sequence[int], held_out: np.ndarray, rng: np.random.Generator
                      ) -> Tuple[nn.Linear, Dict]:
    """SUZOD's recipe (module docstring); head: the detector's box classifier (:func:`detector_head`);
    syn_y (n, C + 1)."""
    r, c = SUZOD_RECIPE, len(syn_y[0]) - 1
    weight, bias = head
    bg = np.nonzero((bank.labels == bank.num_classes) & ~held_out)[0]
    bg = np.sort(rng.choice(bg, min(len(bg), r["background_per_class"] * cfg.SYNTHESIS.NUM_PER_CLASS), replace=False))
    cols = list(unseen_ids) + [c]
    x = torch.cat([syn_x, torch.from_numpy(bank.load(bg))])
    y = torch.cat([syn_y[:, cols], torch.zeros(len(bg), len(cols)).index_fill_(1, torch.tensor([len(cols) - 1]), 1)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.SEED)
        unseen_head = nn.Linear(bank.feature_dim, len(cols))
    stats = fit_box_classifier(unseen_head, x, soft_targets(y), epochs=r["epochs"], batch_size=r["batch_size"],
                               lr=r["lr"], betas=r["betas"], seed=cfg.SEED)
    classifier = nn.Linear(bank.feature_dim, c + 1)
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.zero_()
        k = bank.num_classes
        classifier.weight[:k], classifier.bias[:k] = weight[:k], bias[:k]
        classifier.weight[list(unseen_ids)] = unseen_head.weight[:-1]
        classifier.bias[list(unseen_ids)] = unseen_head.bias[:-1]
        share = r["detector_background_share"]
        classifier.weight[c] = share * weight[k] + (1 - share) * unseen_head.weight[-1]
        classifier.bias[c] = share * bias[k] + (1 - share) * unseen_head.bias[-1]
    return classifier, {"unseen_head": stats, "background_rows": int(len(bg))}


def train_synthesis_classifier(cfg, bank: FeatureBank, trainer: SynthesisTrainer, seen_ids: Sequence[int],
                               unseen_ids: Sequence[int], held_out_images: np.ndarray,
                               detector_weights: Optional[str] = None,
                               excluded_images: Optional[np.ndarray] = None) -> Tuple[nn.Module, Dict]:
    """The synthesis method's box classifier (module docstring).

    Args:
        bank: the RoI bank; trainer: the loaded generator (its C classes are the classifier's).
        seen_ids / unseen_ids: classes with real / synthesized features.
        held_out_images: validation images: none of their RoIs is trained on; their seen RoIs
            calibrate the classifier.
        detector_weights: the stage-1 detector, whose box classifier recipe "suzod", SEEN_ROWS "detector",
            SEEN_DISTILLATION and CALIBRATION_REFERENCE "detector" use (:func:`detector_head`).
        excluded_images: more images never trained on nor calibrated on (the validation benchmark's).
    Returns:
        (classifier ``nn.Linear(d, C + 1)``, :class:`~zsdet.modeling.MLPBoxClassifier` or
        :class:`~zsdet.modeling.SeenGroupMLPClassifier`, record of counts, training and calibration).
    """
    c, num_classes = cfg.ZSD.CLASSIFIER, trainer.num_classes
    head = detector_head(cfg, detector_weights)  # before any training: a missing detector fails here
    rng = np.random.default_rng(cfg.SEED)
    unused = held_out_images if excluded_images is None else np.union1d(held_out_images, excluded_images)
    x, y = real_training_set(cfg, bank, seen_ids, rng, with_mixtures=True, held_out_images=unused)
    y = widen_labels(y, num_classes)
    syn_x, syn_y = synthesized_set(trainer, unseen_ids, cfg.SYNTHESIS.NUM_PER_CLASS, cfg.SEED)
    parts = [(len(syn_x), cfg.SEED)]  # (rows, noise seed) of each synthesis call, in order
    record = {"recipe": c.RECIPE, "loss": c.LOSS, "hidden_units": c.HIDDEN_UNITS, "real_and_mixed": len(x),
              "synthesized_single": len(syn_x), "synthesized_sets": 0}
    if c.UNSEEN_MIXTURES:
        real_sets = LabelSets.from_multi_hot(y[y[:, :-1].sum(1) > 0, :-1])
        num = int(c.MIXTURE_RATIO * len(syn_x))
        sets = unseen_mixture_sets(cfg, real_sets, trainer.generator.class_embeddings.cpu(), seen_ids, unseen_ids,
                                   num, derive_seed(cfg.SEED, UNSEEN_SETS_KEY))
        mix_x, mix_y = trainer.synthesize(sets, 1, seed=derive_seed(cfg.SEED, UNSEEN_SETS_KEY))
        syn_x = torch.cat([syn_x, mix_x])
        parts.append((len(mix_x), derive_seed(cfg.SEED, UNSEEN_SETS_KEY)))
        syn_y = torch.cat([syn_y, torch.cat([mix_y, mix_y.new_zeros(len(mix_y), 1)], 1)])  # no background mass
        record["synthesized_sets"] = len(mix_x)
    logger.info("box classifier (%s): %d real + mixed, %d synthesized single-label, %d synthesized multi-label "
                "features", c.RECIPE, len(x), record["synthesized_single"], record["synthesized_sets"])
    held_out = np.isin(bank.image_ids, held_out_images)
    alignment = None
    if c.ALIGN_SYNTHESIZED != "none":
        alignment, record["alignment"] = fit_alignment(cfg, bank, trainer, x, y, seen_ids, held_out)
    if c.ANCHOR_SYNTHESIZED:
        syn_x, record["anchoring"] = anchor_synthesized(cfg, bank, trainer, x, y, syn_x, syn_y, parts, seen_ids,
                                                        alignment, held_out)
    elif alignment is not None:
        syn_x = alignment(syn_x)
    if c.RECIPE == "suzod":
        classifier, record["training"] = _suzod_classifier(cfg, head, bank, syn_x, syn_y, unseen_ids,
                                                           np.isin(bank.image_ids, unused), rng)
    else:
        unseen_mask = torch.zeros(num_classes + 1, dtype=torch.bool)
        unseen_mask[list(unseen_ids)] = True
        loss = functools.partial(grouped_cross_entropy, unseen_mask=unseen_mask) if c.LOSS == "grouped" else None
        if c.SEEN_DISTILLATION > 0:
            real_targets = detector_distilled_targets(x, y, *head, unseen_ids, c.SEEN_DISTILLATION)
            record["seen_distillation"] = c.SEEN_DISTILLATION
        else:
            real_targets = soft_targets(y)
        features, targets = torch.cat([x, syn_x]), torch.cat([real_targets, soft_targets(syn_y)])

        def fitted(module: nn.Module, loss: Optional[Callable], rows: Tuple[torch.Tensor, torch.Tensor]) -> Dict:
            return fit_box_classifier(module, *rows, epochs=c.EPOCHS, batch_size=c.BATCH_SIZE, lr=c.LR,
                                      weight_decay=c.WEIGHT_DECAY, seed=cfg.SEED, loss=loss)

        def trained(kind: str, loss: Optional[Callable] = loss, rows: Tuple[torch.Tensor, torch.Tensor] = (
                features, targets)) -> Tuple[nn.Module, Dict]:
            with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed only
                torch.manual_seed(cfg.SEED)
                module = build_box_head(kind, bank.feature_dim, num_classes + 1, c.HIDDEN_UNITS)
            return module, fitted(module, loss, rows)

        def trained_members(rows: Tuple[torch.Tensor, torch.Tensor]) -> Tuple[nn.Module, List[Dict]]:
            """SEEN_GROUP_FOLDS / SEEN_GROUP_ENSEMBLE M: each MLP with the seen group's loss, the seen classes it
            does not know (with FOLDS) background to it."""
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.SEED)
                mlps = SeenGroupMLPs(bank.feature_dim, c.HIDDEN_UNITS, num_classes + 1, seen_ids, *members)
            return mlps, [fitted(mlp, functools.partial(group_cross_entropy, other=mlps.left_out(m)), rows)
                          for m, mlp in enumerate(mlps.members)]

        if box_classifier_kind(cfg) == "seen_mlp":  # two heads on the same rows (the MLP's with its negatives)
            seen_loss = (functools.partial(seen_group_cross_entropy, unseen_mask=unseen_mask)
                         if c.SEEN_GROUP_LOSS in ("grouped", "real") else loss)
            mlp_rows = (x, real_targets) if c.SEEN_GROUP_LOSS == "real" else (features, targets)
            if c.SEEN_GROUP_NEGATIVES > 0:
                neg_x, neg_t, record["seen_group_negatives"] = seen_group_negatives(cfg, x, y)
                mlp_rows = (torch.cat([features, neg_x]), torch.cat([targets, neg_t]))
            members = seen_group_layout(c)
            (linear, record["training"]), (mlp, record["training_mlp"]) = (
                trained("linear"), trained_members(mlp_rows) if members[0] else trained("mlp", seen_loss, mlp_rows))
            if members[0]:
                record["seen_group_mlps"] = {"members": members[0], "leave_out": members[1]}
            classifier = SeenGroupMLPClassifier(linear, mlp, seen_ids)
            record["hidden_groups"], record["seen_group_loss"] = "seen", c.SEEN_GROUP_LOSS
        else:
            classifier, record["training"] = trained(box_classifier_kind(cfg))
    if c.SEEN_ROWS == "detector":
        keep_detector_seen_group(classifier, *head, seen_ids)
        record["seen_rows"] = "detector"
    if c.UNSEEN_LOGIT_BIAS:
        fold_unseen_bias(classifier, unseen_ids, c.UNSEEN_LOGIT_BIAS)
        record["unseen_logit_bias"] = c.UNSEEN_LOGIT_BIAS
    if c.SEEN_ACCURACY_BUDGET > 0:
        record["gzsd_calibration"] = calibrate(cfg, bank, classifier, seen_ids, unseen_ids, held_out, head)
    return classifier, record


def calibrate(cfg, bank: FeatureBank, classifier: nn.Module, seen_ids: Sequence[int], unseen_ids: Sequence[int],
              held_out: np.ndarray, head: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Dict:
    """Choose the seen-logit bias on the held-out seen RoIs (at most ``SYNTHESIS.VAL_MAX_SAMPLES`` of
    them) and fold it into ``classifier`` (:mod:`.gzsd_calibration`); the budget counts from
    ``classifier`` without its folded ``ZSD.CLASSIFIER.UNSEEN_LOGIT_BIAS``, or with
    ``CALIBRATION_REFERENCE`` ``"detector"`` from the detector's box classifier ``head``
    (:func:`detector_head`)."""
    c = cfg.ZSD.CLASSIFIER
    rows = np.nonzero(held_out & np.isin(bank.labels, seen_ids))[0]
    rng = np.random.default_rng(derive_seed(cfg.SEED, CALIBRATION_KEY))
    rows = np.sort(rng.choice(rows, min(len(rows), cfg.SYNTHESIS.VAL_MAX_SAMPLES), replace=False))
    features = torch.from_numpy(bank.load(rows))
    with torch.no_grad():
        logits = classifier(features)
    z, labels = cfg.MODEL.ZSD, torch.from_numpy(bank.labels[rows].astype(np.int64))
    unseen_mask = torch.zeros(logits.shape[1], dtype=torch.bool)
    unseen_mask[list(unseen_ids)] = True
    if c.CALIBRATION_REFERENCE == "detector":
        reference_logits = detector_logits(*head, features, logits.shape[1], unseen_ids)
    else:
        reference_logits = logits - c.UNSEEN_LOGIT_BIAS * unseen_mask.to(logits.dtype)
    reference = top1_accuracy(reference_logits, labels, unseen_mask, z.GZSD_SCORING, z.GZSD_SEEN_THRESH, 0.0)
    choice = choose_seen_bias(logits, labels, unseen_ids, z.GZSD_SCORING, z.GZSD_SEEN_THRESH,
                              c.SEEN_ACCURACY_BUDGET, reference,
                              lowest_bias=c.MIN_SEEN_LOGIT_BIAS if c.CALIBRATION_REFERENCE == "detector" else 0.0)
    choice["reference"] = c.CALIBRATION_REFERENCE
    choice["seen_rois"] = seen_roi_labels(logits, labels, unseen_mask, z.GZSD_SCORING, z.GZSD_SEEN_THRESH,
                                          choice["seen_logit_bias"])
    choice["reference_seen_columns_top1"] = seen_columns_top1(reference_logits, labels, unseen_mask)
    fold_seen_bias(classifier, seen_ids, choice["seen_logit_bias"])
    logger.info("GZSD calibration on %d held-out seen RoIs: seen-logit bias %.2f (seen top-1 %.1f%% -> %.1f%%, "
                "budget %.1f points, %s scoring)", choice["num_rois"], choice["seen_logit_bias"],
                choice["seen_top1_at_0"], choice["seen_top1"], choice["budget"], choice["scoring"])
    return choice
