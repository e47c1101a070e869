"""Every setting of every requested stage, checked before the first stage starts.

A bad value must fail in seconds with a message naming the key and the value, not after the
detector trained for hours. :func:`check_pipeline_settings` (called by ``ZSDPipeline.run``) runs
the checks of the requested detection stages; :func:`check_classification_settings` (called by
``run_classification``) those of the classification tool. Where a component checks its own
settings (``check_synthesis_config``, the detector's ``from_config`` through a model built
on the ``meta`` device, the class-embedding readers) the same function is called here, early.

The checks written here raise :class:`SettingsError`, a ``ValueError`` reading
``"<KEY> must be <what>, got <value>"``; the components' own checks raise ``ValueError`` /
``KeyError`` / ``FileNotFoundError`` naming the key, file or class. ``tools/train_net.py`` and
``tools/train_mlzsl.py`` print any of them as one line, ``error: <message>``, and exit with status 1.
"""
import os
from typing import Any, Callable, Iterable

import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils import comm

from ..data.zsd_split import ZeroShotSplit, class_embeddings_from_config, class_embeddings_source
from ..evaluation.multilabel import CONVENTIONS
from ..synthesis.checkpoint import BEST, CHECKPOINT, check_embeddings_file, embeddings_record
from ..synthesis.settings import SynthesisSettings, check_synthesis_config
from .gzsd_calibration import REFERENCES
from .synthesis_classifier import ALIGNMENTS, HIDDEN_GROUPS, LOSSES, RECIPES, SEEN_GROUP_LOSSES, SEEN_ROWS

__all__ = ["SettingsError", "check_pipeline_settings", "check_eval_only_settings", "check_classification_settings",
           "box_feature_dim"]


class SettingsError(ValueError):
    """A config value that cannot work; the message names the key and the value given."""


def setting(cfg, key: str) -> Any:
    """The value of a dotted config key such as ``"ZSD.CLASSIFIER.EPOCHS"``."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def require(cfg, key: str, ok: Callable[[Any], bool], expected: str) -> Any:
    """``cfg``'s value of ``key`` if ``ok(value)``, else a :class:`SettingsError` saying ``expected``."""
    value = setting(cfg, key)
    if not ok(value):
        raise SettingsError(f"{key} must be {expected}, got {value!r}")
    return value


def at_least(cfg, key: str, minimum) -> Any:
    return require(cfg, key, lambda v: v >= minimum, f">= {minimum}")


def positive(cfg, key: str) -> Any:
    return require(cfg, key, lambda v: v > 0, "> 0")


def within(cfg, key: str, low: float, high: float, high_open: bool = False) -> Any:
    """``low <= value <= high`` (``< high`` with ``high_open``)."""
    return require(cfg, key, lambda v: low <= v and (v < high if high_open else v <= high),
                   f"in [{low}, {high}{')' if high_open else ']'}")


def registered(key: str, name: str) -> None:
    if name not in DatasetCatalog.list():
        raise SettingsError(f"{key} names the dataset {name!r}, which is not registered "
                            "(see datasets/README.md)")


# ---------------------------------------------------------------------------------- detection
def box_feature_dim(cfg) -> int:
    """Dimension of the box head's features (the RoI bank's d) from a detector built on the
    ``meta`` device: no memory, no weights, and the model's own config checks run."""
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    return int(model.roi_heads.box_head.output_shape.channels)


def divided_among_ranks(cfg, key: str) -> Any:
    """A batch over all processes (``SOLVER.IMS_PER_BATCH``, ``SYNTHESIS.BATCH_SIZE``): >= 1 and
    divisible by their number."""
    world = comm.get_world_size()
    return require(cfg, key, lambda v: v >= 1 and v % world == 0,
                   f">= 1 and divisible by the number of processes ({world}): it is the batch over all of them")


def check_detector_settings(cfg) -> None:
    """Stage ``detector``: the detectron2 solver keys that otherwise fail inside detectron2 / fvcore, and
    the auxiliary embedding loss's weight."""
    divided_among_ranks(cfg, "SOLVER.IMS_PER_BATCH")
    at_least(cfg, "SOLVER.MAX_ITER", 1)
    positive(cfg, "SOLVER.BASE_LR")
    at_least(cfg, "SOLVER.CHECKPOINT_PERIOD", 1)
    at_least(cfg, "MODEL.ZSD.SEMANTIC_AUX_WEIGHT", 0.0)


def check_feature_settings(cfg) -> None:
    """Stage ``features``: ``ZSD.FEATURES``."""
    fg = within(cfg, "ZSD.FEATURES.FG_IOU", 0.0, 1.0)
    within(cfg, "ZSD.FEATURES.BG_IOU", 0.0, fg)
    at_least(cfg, "ZSD.FEATURES.ROIS_PER_IMAGE", 1)
    require(cfg, "ZSD.FEATURES.POSITIVE_FRACTION", lambda v: 0 < v <= 1, "in (0, 1]")
    at_least(cfg, "ZSD.FEATURES.BG_PER_FG", 0)
    at_least(cfg, "ZSD.FEATURES.FLUSH_EVERY", 1)
    at_least(cfg, "ZSD.FEATURES.IMAGES_PER_BATCH", 1)
    at_least(cfg, "DATALOADER.NUM_WORKERS", 0)


def check_mixture_settings(cfg) -> None:
    """``ZSD.MIXTURES`` (generator and classifier stages)."""
    at_least(cfg, "ZSD.MIXTURES.RATIO", 0)
    low = at_least(cfg, "ZSD.MIXTURES.MIN_SET_SIZE", 1)
    at_least(cfg, "ZSD.MIXTURES.MAX_SET_SIZE", low)


def check_generator_data_settings(cfg) -> None:
    """Stage ``generator``: the streamed RoI source (``ZSD.FEATURES`` streaming / epoch keys) and
    mixtures no larger than the generator's label sets."""
    within(cfg, "ZSD.FEATURES.VAL_FRACTION", 0.0, 1.0, high_open=True)
    divided_among_ranks(cfg, "SYNTHESIS.BATCH_SIZE")
    positive(cfg, "ZSD.FEATURES.STREAM_MEMORY_MB")
    at_least(cfg, "ZSD.FEATURES.STREAM_BLOCK_ROWS", 1)
    at_least(cfg, "ZSD.FEATURES.SAMPLES_PER_EPOCH", 0)
    limit = cfg.SYNTHESIS.MAX_SET_SIZE
    if limit and cfg.ZSD.MIXTURES.MAX_SET_SIZE > limit:
        raise SettingsError(f"ZSD.MIXTURES.MAX_SET_SIZE must be <= SYNTHESIS.MAX_SET_SIZE ({limit}), "
                            f"got {cfg.ZSD.MIXTURES.MAX_SET_SIZE}")


def check_box_classifier_settings(cfg, epochs_key: str, lr_key: str) -> None:
    """``ZSD.CLASSIFIER`` (batches, real-feature sampling) and the stage's epochs / learning rate."""
    at_least(cfg, epochs_key, 1)
    positive(cfg, lr_key)
    at_least(cfg, "ZSD.CLASSIFIER.BATCH_SIZE", 1)
    at_least(cfg, "ZSD.CLASSIFIER.WEIGHT_DECAY", 0)
    at_least(cfg, "ZSD.CLASSIFIER.REAL_PER_CLASS", 0)
    at_least(cfg, "ZSD.CLASSIFIER.BG_PER_FG", 0)
    at_least(cfg, "ZSD.CLASSIFIER.MIXTURE_RATIO", 0)


def check_synthesis_classifier_settings(cfg) -> None:
    """Stage ``classifier``: the recipe, the alignment, the calibration budget and the unseen label sets."""
    require(cfg, "ZSD.CLASSIFIER.RECIPE", lambda v: v in RECIPES, f"one of {RECIPES}")
    require(cfg, "ZSD.CLASSIFIER.LOSS", lambda v: v in LOSSES, f"one of {LOSSES}")
    if cfg.ZSD.CLASSIFIER.RECIPE == "suzod":
        require(cfg, "ZSD.CLASSIFIER.LOSS", lambda v: v == "joint", "'joint' with ZSD.CLASSIFIER.RECIPE 'suzod' "
                "(its own losses)")
    require(cfg, "ZSD.CLASSIFIER.ALIGN_SYNTHESIZED", lambda v: v in ALIGNMENTS, f"one of {ALIGNMENTS}")
    at_least(cfg, "ZSD.CLASSIFIER.ANCHOR_NEAREST", 0)
    within(cfg, "ZSD.CLASSIFIER.SEEN_ACCURACY_BUDGET", 0.0, 100.0)
    within(cfg, "ZSD.CLASSIFIER.UNSEEN_LOGIT_BIAS", 0.0, 20.0)
    require(cfg, "ZSD.CLASSIFIER.MIN_SEEN_LOGIT_BIAS", lambda v: -10.0 <= v <= 0.0 and float(v * 4).is_integer(),
            "in [-10.0, 0.0] and a multiple of 0.25 (the calibration's grid step)")
    require(cfg, "ZSD.CLASSIFIER.CALIBRATION_REFERENCE", lambda v: v in REFERENCES, f"one of {REFERENCES}")
    require(cfg, "ZSD.CLASSIFIER.SEEN_ROWS", lambda v: v in SEEN_ROWS, f"one of {SEEN_ROWS}")
    within(cfg, "ZSD.CLASSIFIER.SEEN_DISTILLATION", 0.0, 1.0)
    at_least(cfg, "ZSD.CLASSIFIER.HIDDEN_UNITS", 0)
    require(cfg, "ZSD.CLASSIFIER.HIDDEN_GROUPS", lambda v: v in HIDDEN_GROUPS, f"one of {HIDDEN_GROUPS}")
    require(cfg, "ZSD.CLASSIFIER.SEEN_GROUP_LOSS", lambda v: v in SEEN_GROUP_LOSSES, f"one of {SEEN_GROUP_LOSSES}")
    at_least(cfg, "ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES", 0)
    if cfg.ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES > 0:  # its rows go to the seen group's MLP only
        require(cfg, "ZSD.CLASSIFIER.HIDDEN_GROUPS", lambda v: v == "seen", "'seen' with "
                "ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES > 0 (the negatives train the seen group's MLP alone)")
        require(cfg, "ZSD.CLASSIFIER.HIDDEN_UNITS", lambda v: v > 0, "> 0 with ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES "
                "> 0 (the seen group's MLP)")
    for key in ("SEEN_GROUP_FOLDS", "SEEN_GROUP_ENSEMBLE"):  # the seen group's MLP as several, with its loss
        at_least(cfg, f"ZSD.CLASSIFIER.{key}", 0)
        if cfg.ZSD.CLASSIFIER[key]:
            require(cfg, f"ZSD.CLASSIFIER.{key}", lambda v: v >= 2, ">= 2 (or 0: one MLP)")
            require(cfg, "ZSD.CLASSIFIER.HIDDEN_GROUPS", lambda v: v == "seen", f"'seen' with "
                    f"ZSD.CLASSIFIER.{key} > 0 (its MLPs give the seen group)")
            require(cfg, "ZSD.CLASSIFIER.HIDDEN_UNITS", lambda v: v > 0, f"> 0 with ZSD.CLASSIFIER.{key} > 0")
            require(cfg, "ZSD.CLASSIFIER.SEEN_GROUP_LOSS", lambda v: v == "grouped", f"'grouped' with "
                    f"ZSD.CLASSIFIER.{key} > 0 (the seen group's softmax, a left-out class background in it)")
    if cfg.ZSD.CLASSIFIER.SEEN_GROUP_ENSEMBLE:
        require(cfg, "ZSD.CLASSIFIER.SEEN_GROUP_FOLDS", lambda v: v == 0, "0 with ZSD.CLASSIFIER.SEEN_GROUP_ENSEMBLE "
                "> 0 (one way of making the seen group's MLPs)")
    if cfg.ZSD.CLASSIFIER.HIDDEN_UNITS > 0:
        require(cfg, "ZSD.CLASSIFIER.RECIPE", lambda v: v == "joint", "'joint' with ZSD.CLASSIFIER.HIDDEN_UNITS > 0 "
                "(recipe 'suzod' keeps the detector's linear seen rows)")
        require(cfg, "ZSD.CLASSIFIER.SEEN_ROWS", lambda v: v == "retrained", "'retrained' with "
                "ZSD.CLASSIFIER.HIDDEN_UNITS > 0 (the detector's rows are a linear head's)")
    if cfg.ZSD.CLASSIFIER.SEEN_DISTILLATION > 0:
        require(cfg, "ZSD.CLASSIFIER.RECIPE", lambda v: v == "joint", "'joint' with ZSD.CLASSIFIER.SEEN_DISTILLATION "
                "> 0 (recipe 'suzod' keeps the detector's seen rows)")
    if cfg.ZSD.CLASSIFIER.SEEN_ACCURACY_BUDGET > 0:
        require(cfg, "ZSD.FEATURES.VAL_FRACTION", lambda v: 0 < v < 1,
                "in (0, 1) (ZSD.CLASSIFIER.SEEN_ACCURACY_BUDGET calibrates on the validation images)")
    if cfg.ZSD.CLASSIFIER.UNSEEN_MIXTURES:  # its label sets are drawn like the real mixtures, MIXTURE_RATIO x as many
        require(cfg, "ZSD.CLASSIFIER.MIXTURE_RATIO", lambda v: v > 0, "> 0 with ZSD.CLASSIFIER.UNSEEN_MIXTURES True "
                "(the shipped configs set 0: no real mixtures; the paper's value is 0.25)")
        ls = "SYNTHESIS.LABEL_SAMPLING."
        for key in ("UNSEEN_FRACTION", "MIXED_FRACTION", "MIXED_KEEP_SEEN"):
            within(cfg, ls + key, 0.0, 1.0)
        at_least(cfg, ls + "ROUNDS", 1)


def check_evaluation_settings(cfg) -> None:
    """Stage ``evaluate``: the test datasets are registered; the scoring settings are in range."""
    for key in ("ZSD.TEST_ZSD", "ZSD.TEST_GZSD"):
        if setting(cfg, key):
            registered(key, setting(cfg, key))
    at_least(cfg, "TEST.DETECTIONS_PER_IMAGE", 1)
    within(cfg, "MODEL.ZSD.ZSD_UNSEEN_LOGIT_BIAS", 0.0, 20.0)
    within(cfg, "MODEL.ZSD.GZSD_SEEN_THRESH", 0.0, 1.0)


def check_generator_checkpoints(cfg, stages: set, embeddings) -> None:
    """The generator checkpoints that the requested stages will use were trained with the config's
    class embeddings ``embeddings`` (C, a): ``last_checkpoint.pth`` for a resumed ``generator``
    stage, ``model_best.pth`` for a ``classifier`` stage that does not retrain it. Checked by
    fingerprint (:mod:`zsdet.synthesis.checkpoint`), before any stage runs."""
    folder = os.path.join(cfg.OUTPUT_DIR, "generator")
    used = []
    if "generator" in stages and cfg.SYNTHESIS.RESUME:
        used.append(CHECKPOINT)
    if "classifier" in stages and "generator" not in stages:
        used.append(BEST)
    record = embeddings_record(torch.as_tensor(embeddings, dtype=torch.float32),
                               ZeroShotSplit.from_dataset(cfg.DATASETS.TRAIN[0]).class_names,
                               class_embeddings_source(cfg))
    for name in used:
        if os.path.isfile(os.path.join(folder, name)):
            check_embeddings_file(os.path.join(folder, name), record, folder)


def check_eval_only_settings(cfg) -> None:
    """``tools/train_net.py --eval-only``: the ``evaluate`` stage's settings and ``MODEL.WEIGHTS``."""
    check_pipeline_settings(cfg, ["evaluate"])
    require(cfg, "MODEL.WEIGHTS", os.path.isfile, "an existing weights file (e.g. OUTPUT_DIR/model_zsd.pth)")


def check_pipeline_settings(cfg, stages: Iterable[str]) -> None:
    """Check the settings of every stage in ``stages`` (see the module docstring) before any work.

    Raises:
        SettingsError: a value that cannot work (key and value named).
        ValueError / KeyError / FileNotFoundError: from the checks the stages' own components run
            (detector config, class-embedding file, generator settings), naming key, file or class.
    """
    stages = set(stages)
    if not cfg.DATASETS.TRAIN:
        raise SettingsError("DATASETS.TRAIN must name the training dataset, got ()")
    registered("DATASETS.TRAIN", cfg.DATASETS.TRAIN[0])
    seen_detector = cfg.clone()
    seen_detector.defrost()
    seen_detector.MODEL.ZSD.MODE = "seen"  # what stages 1 and 2 build
    feature_dim = box_feature_dim(seen_detector)
    if "detector" in stages:
        check_detector_settings(cfg)
    if "features" in stages:
        check_feature_settings(cfg)
    if "generator" in stages:
        check_generator_data_settings(cfg)
    if stages & {"generator", "classifier"}:
        check_mixture_settings(cfg)
    if stages & {"generator", "classifier", "baseline"}:
        embeddings = class_embeddings_from_config(cfg)  # readable, every class covered
        if stages & {"generator", "classifier"}:
            check_synthesis_config(cfg, feature_dim, embeddings.shape[1])
            check_generator_checkpoints(cfg, stages, embeddings)
    if "classifier" in stages:
        check_box_classifier_settings(cfg, "ZSD.CLASSIFIER.EPOCHS", "ZSD.CLASSIFIER.LR")
        at_least(cfg, "SYNTHESIS.NUM_PER_CLASS", 1)
        check_synthesis_classifier_settings(cfg)
        seen = len(ZeroShotSplit.from_dataset(cfg.DATASETS.TRAIN[0]).seen_ids)
        require(cfg, "ZSD.CLASSIFIER.SEEN_GROUP_FOLDS", lambda v: v <= seen,
                f"at most the training split's {seen} seen classes (each fold leaves at least one out)")
    if "baseline" in stages:
        check_box_classifier_settings(cfg, "ZSD.BASELINE.EPOCHS", "ZSD.BASELINE.LR")
        positive(cfg, "MODEL.ZSD.SEMANTIC_TEMPERATURE")
    if "evaluate" in stages:
        check_evaluation_settings(cfg)


# ---------------------------------------------------------------------------------- classification
def check_classification_settings(cfg, eval_only: bool = False) -> None:
    """Check ``cfg.MLZSL`` and, unless ``eval_only``, the generator and final-classifier settings of
    ``cfg.SYNTHESIS`` before any work (the files are checked by ``load_benchmark``).

    Raises:
        SettingsError / ValueError: naming the key and the value.
    """
    m = "MLZSL."
    positive(cfg, m + "STREAM_MEMORY_MB")
    at_least(cfg, m + "STREAM_BLOCK_ROWS", 1)
    require(cfg, m + "TOP_K", lambda ks: len(ks) > 0 and min(ks) >= 1, "a non-empty list of K >= 1")
    require(cfg, m + "AP_CONVENTION", lambda v: v in CONVENTIONS, f"one of {CONVENTIONS}")
    at_least(cfg, m + "PLOT_TOP_N", 1)
    require(cfg, m + "PLOT_BASELINE_JSON", lambda v: not v or os.path.isfile(v), "an existing results.json")
    if cfg.MLZSL.BENCHMARK == "synthetic":
        for key in ("NUM_SEEN", "NUM_UNSEEN", "FEATURE_DIM", "EMBED_DIM", "NUM_TRAIN", "NUM_ZSL_TEST",
                    "NUM_GZSL_TEST", "MAX_LABELS", "NUM_TOPICS"):
            at_least(cfg, m + "SYNTHETIC." + key, 1)
        for key in ("PROTOTYPE_NOISE", "FEATURE_NOISE"):
            at_least(cfg, m + "SYNTHETIC." + key, 0)
    if eval_only:
        return
    c = "SYNTHESIS.CLASSIFIER."
    at_least(cfg, c + "EPOCHS", 1)
    at_least(cfg, c + "BATCH_SIZE", 1)
    positive(cfg, c + "LR")
    require(cfg, c + "BETAS", lambda b: len(b) == 2 and all(0 <= x < 1 for x in b), "two numbers in [0, 1)")
    if cfg.MLZSL.SYNTH_LABEL_SETS == "none":
        return
    # SynthesisTrainer.from_config checks the dimensions against the data files, before training
    settings = SynthesisSettings.from_config(cfg)
    settings.validate()
    divided_among_ranks(cfg, "SYNTHESIS.BATCH_SIZE")
    if cfg.MLZSL.BENCHMARK == "synthetic":  # the dimensions are settings too
        settings.check_data(cfg.MLZSL.SYNTHETIC.FEATURE_DIM, cfg.MLZSL.SYNTHETIC.EMBED_DIM)
    if cfg.MLZSL.SYNTH_LABEL_SETS in ("singleton", "both"):
        at_least(cfg, "SYNTHESIS.NUM_PER_CLASS", 1)
    if cfg.MLZSL.SYNTH_LABEL_SETS in ("cooccurrence", "both"):
        ls = "SYNTHESIS.LABEL_SAMPLING."
        for key in ("SEEN_FRACTION", "UNSEEN_FRACTION", "MIXED_FRACTION", "MIXED_KEEP_SEEN"):
            within(cfg, ls + key, 0.0, 1.0)
        at_least(cfg, ls + "ROUNDS", 1)
