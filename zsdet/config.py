"""zsdet's config extension: :func:`add_zsdet_config` adds every zsdet key to a detectron2 config.

Namespaces (each key carries a one-line comment):
  * ``cfg.SYNTHESIS``: the multi-label feature generator (fusion, GAN family, trainer), shared by
    detection and classification.
  * ``cfg.MODEL.ZSD``: the zero-shot detector's inference-time behaviour.
  * ``cfg.ZSD``: the zero-shot detection pipeline (stages, feature bank, mixtures, retraining).
  * ``cfg.MLZSL``: the multi-label zero-shot classification benchmarks.

An unknown key or a value of the wrong type in a YAML raises detectron2's ``KeyError`` /
``ValueError`` naming the key (see ``tests/test_config.py``).
"""
from detectron2.config import CfgNode as CN


def add_zsdet_config(cfg: CN) -> CN:
    """Add zsdet's keys with their defaults to ``cfg`` (in place) before any YAML is merged.

    Returns ``cfg`` for chaining.
    """
    _add_synthesis_config(cfg)
    _add_zsd_model_config(cfg)
    _add_zsd_pipeline_config(cfg)
    _add_mlzsl_config(cfg)
    return cfg


def _add_synthesis_config(cfg: CN) -> None:
    cfg.SYNTHESIS = CN()
    s = cfg.SYNTHESIS
    s.FUSION = "clf"  # label-set fusion: "alf" (eq. 1), "flf" (eq. 2) or "clf" (eqs. 3-5)
    s.GAN = "fclswgan"  # GAN family: "fclswgan" (WGAN-GP + classifier loss) or "fvaegan"


def _add_zsd_model_config(cfg: CN) -> None:
    cfg.MODEL.ZSD = CN()
    z = cfg.MODEL.ZSD
    z.MODE = "gzsd"  # inference scoring: "zsd" (unseen + bg), "gzsd" (all) or "seen" (seen + bg)
    z.CLASSIFIER = "linear"  # box classifier: "linear" (retrained on synthesized features) or "semantic" (baseline)
    z.SEMANTIC_TEMPERATURE = 0.05  # T of the semantic baseline: logits = cos(Px, e_k) / T
    z.SEEN_LOGIT_BIAS = 0.0  # gzsd only: subtracted from seen logits (calibrated stacking; 0 = off)


def _add_zsd_pipeline_config(cfg: CN) -> None:
    cfg.ZSD = CN()
    p = cfg.ZSD
    # stages to run, in this order; each one reuses the artifacts of the previous ones in OUTPUT_DIR
    p.STAGES = ["detector", "features", "generator", "classifier", "baseline", "evaluate"]
    p.TEST_ZSD = ""  # dataset evaluated in ZSD mode (GT: unseen boxes only)
    p.TEST_GZSD = ""  # dataset evaluated in GZSD mode (GT: all boxes)

    p.FEATURES = CN()  # stage 2: RoI feature bank from the seen training images (protocol §4)
    p.FEATURES.FG_IOU = 0.6  # foreground if max IoU with a GT box >= this
    p.FEATURES.BG_IOU = 0.3  # background if max IoU < this (in between: ignored)
    p.FEATURES.ROIS_PER_IMAGE = 512  # RoIs sampled per image (GT boxes included as proposals)
    p.FEATURES.POSITIVE_FRACTION = 0.25  # largest foreground share of the sampled RoIs
    p.FEATURES.BG_PER_FG = 2.0  # background RoIs kept per foreground RoI of an image
    p.FEATURES.FLUSH_EVERY = 32  # images per committed write (resume granularity)
    p.FEATURES.VAL_FRACTION = 0.1  # share of training images whose RoIs validate the generator

    p.MIXTURES = CN()  # stage 3: multi-label mixtures of single-label RoI features (paper Sec. 5)
    p.MIXTURES.RATIO = 0.5  # mixtures per real single-label feature
    p.MIXTURES.MIN_SET_SIZE = 2  # smallest number of fused RoIs
    p.MIXTURES.MAX_SET_SIZE = 3  # largest number of fused RoIs

    p.SYNTH_PER_CLASS = 250  # stage 5: synthesized features per unseen class

    p.CLASSIFIER = CN()  # stage 6: box-classifier retraining (seen + unseen + background)
    p.CLASSIFIER.EPOCHS = 10  # passes over the training features
    p.CLASSIFIER.BATCH_SIZE = 256  # features per step
    p.CLASSIFIER.LR = 1e-3  # Adam learning rate
    p.CLASSIFIER.WEIGHT_DECAY = 0.0  # Adam weight decay
    p.CLASSIFIER.REAL_PER_CLASS = 1000  # cap on real features per seen class (0 = no cap)
    p.CLASSIFIER.BG_PER_FG = 1.0  # real background features per foreground training feature
    p.CLASSIFIER.MIXTURE_RATIO = 0.25  # real mixtures per real single-label seen feature

    p.BASELINE = CN()  # semantic-projection baseline, trained on seen features only
    p.BASELINE.EPOCHS = 10  # passes over the training features
    p.BASELINE.LR = 1e-3  # Adam learning rate


def _add_mlzsl_config(cfg: CN) -> None:
    cfg.MLZSL = CN()
    m = cfg.MLZSL
    m.BENCHMARK = "synthetic"  # "nus_wide", "open_images", "coco" or "synthetic"
