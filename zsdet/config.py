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
from typing import Sequence

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .data.datasets.reindexed import register_class_list


def add_zsdet_config(cfg: CN) -> CN:
    """Add zsdet's keys with their defaults to ``cfg`` (in place) before any YAML is merged.

    Returns ``cfg`` for chaining.
    """
    _add_synthesis_config(cfg)
    _add_zsd_model_config(cfg)
    _add_zsd_pipeline_config(cfg)
    _add_mlzsl_config(cfg)
    return cfg


def get_zsdet_cfg(config_file: str = "", opts: Sequence[str] = ()) -> CN:
    """detectron2's defaults + zsdet's keys, merged with ``config_file`` then ``opts`` (unfrozen);
    registers the datasets of ``ZSD.CLASS_LIST`` (:mod:`zsdet.data.datasets.reindexed`)."""
    cfg = add_zsdet_config(get_cfg())
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.ZSD.CLASS_LIST:  # datasets re-indexed to a detector's class list (tools/add_classes.py)
        register_class_list(cfg.ZSD.CLASS_LIST)
    return cfg


def _add_synthesis_config(cfg: CN) -> None:
    """``cfg.SYNTHESIS``: read by ``zsdet.synthesis.SynthesisSettings.from_config`` (defaults: paper, NUS-WIDE)."""
    cfg.SYNTHESIS = CN()
    s = cfg.SYNTHESIS
    s.FUSION = "clf"  # label-set fusion: "alf" (eq. 1), "flf" (eq. 2) or "clf" (eqs. 3-5)
    s.GAN = "fclswgan"  # GAN family: "fclswgan" (WGAN-GP + classifier loss, eqs. 6-7) or "fvaegan" (+ cond. VAE)
    s.FEATURE_DIM = 0  # expected visual feature dim d; 0 = take it from the data, else a mismatch is an error
    s.EMBED_DIM = 0  # expected class-embedding dim a; 0 = take it from the embeddings, else must match
    s.NOISE_DIM = 0  # dim of the noise z (and of the VAE latent); 0 = the embedding dim a (paper)
    s.GEN_HIDDEN = 4096  # hidden units of the generators G_a and G_f (two FC layers)
    s.DISC_HIDDEN = 4096  # hidden units of the critic D(x, e_mu) (two FC layers)
    s.ENC_HIDDEN = 4096  # hidden units of the f-VAEGAN encoder E(x, e_mu) (two FC layers)
    s.CLF_HEADS = 8  # attention heads H of the CLF fusion block (d must be divisible by H)
    s.CLF_FF_HIDDEN = 8192  # hidden units of the CLF residual sub-network f (eq. 4)
    s.CLF_DROPOUT = 0.1  # dropout on CLF attention weights and on o (official code; the paper does not say)
    s.CLF_INPUT = "activated"  # CLF fuses x_f, x_a after the output activation (paper) or "pre_activation" (one activation)
    s.CLF_INIT = "random"  # CLF block init: "random" (official) or "identity" (W^O, f's last FC = 0: starts as mean(x_f, x_a))
    s.CLF_BRANCH_NOISE = "shared"  # noise of G_a and G_f in CLF: "shared" (paper: one z) or "separate" (one z each)
    s.MODE_SEEKING_WEIGHT = 0.0  # weight of 1 / (mean|G(z1)-G(z2)| / mean|z1-z2| + 1e-5) in G's loss (SUZOD: 0.01; fclswgan)
    s.SEMANTIC_WEIGHT = 0.0  # weight of the semantic cycle term 1 - cos(R(x~), e_mu) in G's loss, R: a ridge
    # regressor of embeddings on real seen features (zsdet.synthesis.semantic_cycle); 0 = off (paper)
    s.SEMANTIC_UNSEEN = True  # the cycle term also on single unseen classes (their embeddings only)
    s.SEMANTIC_FLOOR = False  # the term charges only a batch mean above the real features' mean (relu(mean - real))
    s.UNSEEN_CLS_WEIGHT = 0.0  # beta: weight of f_cls's BCE against an all-zero seen target on the synthesized
    # features of single unseen classes (their embeddings only) in G's loss: "no seen class" (fclswgan; 0 = off, paper)
    s.OUTPUT_ACTIVATION = "sigmoid"  # generator output: "sigmoid" (official; (0,1)), "clamp" / "sparse_sigmoid" ([0,1], exact
    # zeros; zsdet.synthesis.networks.output_activation), "relu", "none"
    s.FEATURE_SCALING = "minmax"  # "minmax": per-dim [0, 1] scaling fitted on training data (official), "none"
    s.LR = 1e-4  # Adam learning rate of G, D and E
    s.BETAS = (0.5, 0.999)  # Adam betas of G, D and E
    s.CRITIC_ITERS = 5  # critic steps per generator step, each on a fresh real batch (WGAN-GP)
    s.LAMBDA_GP = 10.0  # gradient-penalty coefficient lambda (eq. 6)
    s.CLS_WEIGHT = 0.1  # alpha of eq. 7: weight of the seen classifier's BCE in the G loss (fclswgan only)
    s.CLS_PRETRAIN_EPOCHS = 5  # epochs of the frozen seen classifier f_cls on real seen features (fclswgan only)
    s.CLS_PRETRAIN_LR = 1e-3  # Adam learning rate of f_cls (fclswgan only)
    s.CLS_PRETRAIN_BATCH_SIZE = 300  # batch size of f_cls (fclswgan only)
    s.GAMMA_D = 10.0  # weight of the whole critic loss (fvaegan only; official NUS-WIDE gammaD)
    s.GAMMA_G = 10.0  # weight of the adversarial term in the G/E loss (fvaegan only; official gammaG)
    s.VAE_RECON = "bce"  # f-VAEGAN reconstruction loss: "bce" (official, needs sigmoid outputs) or "mse"
    s.EPOCHS = 50  # training epochs; one epoch = CRITIC_ITERS passes over the data, about n / BATCH_SIZE G steps
    s.BATCH_SIZE = 64  # real samples per critic / generator step over all GPUs (each gets BATCH_SIZE / #GPUs)
    s.MAX_SET_SIZE = 10  # training samples with more positive labels are skipped (official N = 10); 0 = no limit
    s.AMP_DTYPE = "none"  # autocast dtype for training and synthesis: "none" or "bfloat16" (CUDA, or CPU with AMX)
    s.DEVICE = ""  # "" = CUDA when available (the local rank's GPU under DDP), else "cpu"; or e.g. "cpu", "cuda:1"
    s.SEED = 3483  # seed of initialisation, data order, noise and the validation split (official NUS-WIDE seed)
    s.RESUME = True  # continue from OUTPUT_DIR/last_checkpoint.pth when it exists
    s.VAL_FRACTION = 0.1  # fraction of the seen training samples held out for model selection (0 = no selection)
    s.VAL_MAX_SAMPLES = 5000  # at most this many held-out real features are scored each epoch
    s.VAL_SYNTH_SETS = 2000  # training label sets synthesized (one feature each) for the validation probe
    s.VAL_RIDGE = 0.1  # ridge of the validation probe (least-squares linear head), relative to the mean feature energy
    s.PATIENCE = 10  # early stopping after this many epochs without a better validation mAP, counted once the mAP
    # has beaten the first epoch's (a flat start is trained through); 0 = never
    s.SYNTH_BATCH_SIZE = 512  # label sets per generator call when synthesizing (512: CPU activations < 32 MiB)
    s.NUM_PER_CLASS = 250  # features synthesized per unseen class when each unseen class is a set alone
    s.LABEL_SAMPLING = CN()
    s.LABEL_SAMPLING.SEEN_FRACTION = 1.0  # share of real seen label sets copied as seen-only sets (official NUS-WIDE)
    s.LABEL_SAMPLING.UNSEEN_FRACTION = 0.5  # share of real seen sets mapped wholly to their nearest unseen classes
    s.LABEL_SAMPLING.MIXED_FRACTION = 0.5  # share of real seen sets mapped partly (seen + unseen sets)
    s.LABEL_SAMPLING.MIXED_KEEP_SEEN = 0.5  # in mixed sets, fraction of labels kept seen (rest mapped to unseen)
    s.LABEL_SAMPLING.ROUNDS = 1  # repetitions of the three draws (official syn_num)
    s.CLASSIFIER = CN()
    s.CLASSIFIER.EPOCHS = 50  # epochs of the final f_z / f_gz linear heads (paper: 50)
    s.CLASSIFIER.BATCH_SIZE = 300  # batch size of the final heads (paper, NUS-WIDE: 300)
    s.CLASSIFIER.LR = 1e-3  # Adam learning rate of the final heads (paper, NUS-WIDE: 1e-3)
    s.CLASSIFIER.BETAS = (0.5, 0.999)  # Adam betas of the final heads (paper)


def _add_zsd_model_config(cfg: CN) -> None:
    cfg.MODEL.ZSD = CN()
    z = cfg.MODEL.ZSD
    z.MODE = "gzsd"  # inference scoring: "zsd" (unseen + bg), "gzsd" (all) or "seen" (seen + bg)
    z.CLASSIFIER = "linear"  # box classifier: "linear" (retrained on synthesized features), "mlp" (the same with
    # ZSD.CLASSIFIER.HIDDEN_UNITS hidden ReLU units), "seen_mlp" (such an MLP's seen group, a linear head's
    # unseen group) or "semantic" (baseline)
    z.SEMANTIC_TEMPERATURE = 0.05  # T of the semantic baseline: logits = cos(Px, e_k) / T
    z.SEMANTIC_AUX_WEIGHT = 0.0  # stage 1: weight of 1 - cos(P x, e_y) on seen foreground box features (0 = off)
    z.GZSD_SCORING = "grouped"  # gzsd: "grouped" (SUZOD, protocol §9: seen / unseen softmaxes) or "joint" (one softmax)
    z.SEEN_LOGIT_BIAS = 0.0  # gzsd joint: subtracted from seen logits (calibrated stacking; 0 = off)
    z.GZSD_SEEN_THRESH = 0.3  # gzsd grouped: seen probabilities below this are set to 0 (SUZOD: 0.3)
    z.ZSD_UNSEEN_LOGIT_BIAS = 0.0  # zsd only: added to the unseen logits at scoring, their odds against background
    # times e^bias (on top of any ZSD.CLASSIFIER.UNSEEN_LOGIT_BIAS folded into the classifier); gzsd untouched (0 = off)


def _add_zsd_pipeline_config(cfg: CN) -> None:
    cfg.ZSD = CN()
    p = cfg.ZSD
    p.STAGES = ["detector", "features", "generator", "classifier", "baseline", "evaluate"]  # stages to run, in order
    p.TEST_ZSD = ""  # dataset evaluated in ZSD mode (GT: unseen boxes only)
    p.TEST_GZSD = ""  # dataset evaluated in GZSD mode (GT: all boxes)
    p.EMBEDDINGS_FILE = ""  # class-embedding file overriding the training set's metadata ("" = metadata)
    p.EMBEDDINGS_NORMALIZE = "l2"  # "l2" (rows), "spectral" (SUZOD: matrix / largest singular value) or "none"
    p.CLASS_LIST = ""  # class-list json (e.g. written by tools/add_classes.py) whose re-indexed datasets get_zsdet_cfg registers

    p.FEATURES = CN()  # stage 2: RoI feature bank from the seen training images (protocol §4)
    p.FEATURES.FG_IOU = 0.6  # foreground if max IoU with a GT box >= this
    p.FEATURES.BG_IOU = 0.3  # background if max IoU < this (in between: ignored)
    p.FEATURES.ROIS_PER_IMAGE = 512  # RoIs sampled per image (GT boxes included as proposals)
    p.FEATURES.POSITIVE_FRACTION = 0.25  # largest foreground share of the sampled RoIs
    p.FEATURES.BG_PER_FG = 2.0  # background RoIs kept per foreground RoI of an image
    p.FEATURES.IMAGES_PER_BATCH = 1  # images per forward pass on each GPU, fixed groups of the training list (rows depend on the group, not on GPUs)
    p.FEATURES.FLUSH_EVERY = 32  # images per committed write (resume granularity)
    p.FEATURES.VAL_FRACTION = 0.1  # share of training images whose RoIs validate the generator
    p.FEATURES.STREAM_MEMORY_MB = 256.0  # MiB of float32 bank rows the generator's streamed source holds at once
    p.FEATURES.STREAM_BLOCK_ROWS = 256  # RoIs per contiguous bank read; unit of a SAMPLES_PER_EPOCH pass
    p.FEATURES.SAMPLES_PER_EPOCH = 0  # single RoIs per generator pass (0 = all; SUZOD: 38,000 random RoIs)
    p.FEATURES.CLASS_BALANCED = False  # with SAMPLES_PER_EPOCH: equal per-class cap instead of random blocks

    p.MIXTURES = CN()  # stage 3: multi-label mixtures of single-label RoI features (paper Sec. 5)
    p.MIXTURES.RATIO = 0.5  # mixtures per real single-label feature
    p.MIXTURES.MIN_SET_SIZE = 2  # smallest number of fused RoIs
    p.MIXTURES.MAX_SET_SIZE = 3  # largest number of fused RoIs

    p.CLASSIFIER = CN()  # stage 6: box-classifier retraining (seen + unseen + background)
    p.CLASSIFIER.EPOCHS = 10  # passes over the training features
    p.CLASSIFIER.BATCH_SIZE = 256  # features per step
    p.CLASSIFIER.LR = 1e-3  # Adam learning rate
    p.CLASSIFIER.WEIGHT_DECAY = 0.0  # Adam weight decay
    p.CLASSIFIER.REAL_PER_CLASS = 1000  # cap on real features per seen class (0 = no cap)
    p.CLASSIFIER.BG_PER_FG = 1.0  # real background features per foreground training feature
    p.CLASSIFIER.MIXTURE_RATIO = 0.25  # real mixtures per real single-label seen feature
    p.CLASSIFIER.UNSEEN_MIXTURES = False  # also synthesize MIXTURE_RATIO x (unseen singles) label sets with unseen classes
    p.CLASSIFIER.RECIPE = "joint"  # "joint" (all columns trained together) or "suzod" (SUZOD: unseen head + bg blend)
    p.CLASSIFIER.LOSS = "joint"  # recipe joint: "joint" (one softmax) or "grouped" (grouped GZSD scoring's two softmaxes)
    p.CLASSIFIER.SEEN_ACCURACY_BUDGET = 0.0  # GZSD calibration: largest seen-logit bias costing <= this many points of
    # seen top-1 accuracy on the validation images' seen RoIs, folded into the classifier (0 = none)
    p.CLASSIFIER.CALIBRATION_REFERENCE = "classifier"  # the budget counts from: "classifier" (the retrained one
    # before UNSEEN_LOGIT_BIAS) or "detector" (the seen detector's box classifier; the seen bias may go negative)
    p.CLASSIFIER.MIN_SEEN_LOGIT_BIAS = -10.0  # reference "detector": the lowest seen-logit bias the calibration may
    # choose (in [-10, 0], step 0.25), and its choice when no bias reaches the budget (0 = never raise the seen logits)
    p.CLASSIFIER.SEEN_ROWS = "retrained"  # "detector": seen rows rebuilt so that seen minus background logits are the
    # seen detector's (grouped GZSD scoring's seen group = the detector's), after training
    p.CLASSIFIER.SEEN_DISTILLATION = 0.0  # recipe joint: weight in [0, 1] of the seen detector's softmax (seen +
    # background) in the targets of the real single-label training rows (0 = one-hot targets only)
    p.CLASSIFIER.UNSEEN_LOGIT_BIAS = 0.0  # added to the unseen classes' logits (folded into their biases): their odds
    # against background times e^bias in ZSD and GZSD's unseen group (0 = none)
    p.CLASSIFIER.HIDDEN_UNITS = 0  # recipe joint: hidden ReLU units of the retrained box classifier (0 = linear,
    # the paper's; > 0: one hidden layer, evaluated with MODEL.ZSD.CLASSIFIER "mlp")
    p.CLASSIFIER.HIDDEN_GROUPS = "all"  # HIDDEN_UNITS > 0: "all" (every column from the MLP) or "seen" (grouped
    # scoring's seen group from the MLP, the unseen group from a linear head; MODEL.ZSD.CLASSIFIER "seen_mlp")
    p.CLASSIFIER.SEEN_GROUP_LOSS = "joint"  # HIDDEN_GROUPS seen (ignored by other heads, as HIDDEN_GROUPS is by a
    # linear one): the loss of the MLP that gives the seen group: "joint" (the linear head's loss) or "grouped"
    # (grouped scoring's [seen, background] softmax alone, every row's unseen mass on background) or "real" (that
    # loss on the real rows alone: no synthesized unseen row reaches the seen group's MLP)
    p.CLASSIFIER.SEEN_GROUP_NEGATIVES = 0.0  # HIDDEN_GROUPS seen: real mixtures of 2-3 seen RoIs of two or more
    # classes per real single-label seen row, background to the seen group's MLP only, with the real share of zeros
    p.CLASSIFIER.SEEN_GROUP_FOLDS = 0  # HIDDEN_GROUPS seen, SEEN_GROUP_LOSS grouped: M >= 2 makes the seen group's MLP
    # M MLPs, MLP m trained with the m-th fold of the seen classes as background (their log-odds averaged over
    # the MLPs that know a class; zsdet.modeling.SeenGroupMLPs); 0 = one MLP
    p.CLASSIFIER.SEEN_GROUP_ENSEMBLE = 0  # as SEEN_GROUP_FOLDS (not with it), but every MLP knows every seen class:
    # M >= 2 MLPs that differ by their initial weights, their log-odds averaged; 0 = one MLP
    p.CLASSIFIER.ALIGN_SYNTHESIZED = "none"  # "quantile": map synthesized features per dimension to the real
    # distribution; "zeros": only the real share of exact zeros per dimension; both fitted on the seen
    # training RoIs and features synthesized for their label sets
    p.CLASSIFIER.ANCHOR_SYNTHESIZED = False  # every synthesized feature G(L, z) becomes a real seen training RoI x_s
    # plus G(L, z) - G({s}, z), clamped to the real range (zsdet.synthesis.anchoring)
    p.CLASSIFIER.ANCHOR_NEAREST = 3  # ANCHOR_SYNTHESIZED: s among the seen classes nearest L's mean embedding (0 = any)
    p.CLASSIFIER.ANCHOR_ZEROS = False  # ANCHOR_SYNTHESIZED: then the real share of exact zeros per dimension (fitted
    # on the real seen training rows against anchored features of their classes)

    p.BASELINE = CN()  # semantic-projection baseline, trained on seen features only
    p.BASELINE.EPOCHS = 10  # passes over the training features
    p.BASELINE.LR = 1e-3  # Adam learning rate


def _add_mlzsl_config(cfg: CN) -> None:
    """``cfg.MLZSL``: the classification benchmarks run by ``zsdet.engine.classification`` (generator
    and final-classifier settings come from ``cfg.SYNTHESIS``)."""
    cfg.MLZSL = CN()
    m = cfg.MLZSL
    m.BENCHMARK = "synthetic"  # "nus_wide", "open_images", "coco" or "synthetic" (generated, see MLZSL.SYNTHETIC)
    m.MODE = "zsl"  # "zsl": ZSL + GZSL on a seen/unseen split; "standard": every label seen (paper Table 4)
    m.DATA_ROOT = ""  # relative file paths below resolve against it; "" = $DETECTRON2_DATASETS or "datasets"
    m.TRAIN_FILE = ""  # HDF5 seen-train set: features (n, d), labels (n, S) over the seen classes
    m.ZSL_TEST_FILE = ""  # HDF5 ZSL test set, labels (n, U) over the unseen classes (mode "zsl")
    m.GZSL_TEST_FILE = ""  # HDF5 GZSL test set, labels (n, S + U): seen then unseen classes (mode "zsl")
    m.TEST_FILE = ""  # HDF5 test set of mode "standard", labels (n, S) over all (seen) classes
    m.FEATURES_KEY = "features"  # HDF5 dataset of the features, e.g. VGG-19 FC7 (d = 4096)
    m.LABELS_KEY = "labels"  # HDF5 dataset of the labels: {0, 1}, or {-1, 0, 1} with 0 = unknown
    m.SEEN_CLASSES_FILE = ""  # seen class names, one per line, in label-column order
    m.UNSEEN_CLASSES_FILE = ""  # unseen class names, one per line, in label-column order (mode "zsl")
    m.EMBEDDINGS_FILE = ""  # class embeddings e(k): .tsv table, word-vector text, .npy, or NUS-WIDE pickle
    m.EMBEDDINGS_FORMAT = "auto"  # "auto", "table", "word_vectors", "npy" or "nus_wide_pickle"
    m.EMBEDDINGS_CLASS_LIST = ""  # row names of a .npy embedding file ("" = the <stem>.txt beside it)
    m.EMBEDDINGS_NORMALIZE = "l2"  # row normalisation of e(k): "l2" (paper), "spectral" or "none"
    m.NUS_WIDE_TAG_LIST = ""  # nus_wide_pickle: optional TagList1k.txt naming the pickle's 1000 tag rows
    m.NUS_WIDE_CONCEPT_LIST = ""  # nus_wide_pickle: optional Concepts81.txt naming its 81 concept rows
    m.TOP_K = [3, 5]  # K of P / R / F1 at top-K (paper: 3, 5 on NUS-WIDE and COCO; 10, 20 on Open Images)
    m.AP_CONVENTION = "standard"  # mAP: "standard" (labels without positives skipped) or "official" (count as 0)
    m.STREAM_MEMORY_MB = 256.0  # MiB held at once by each streamed HDF5 reader, and in all by a test file's evaluation
    m.STREAM_BLOCK_ROWS = 256  # rows per contiguous HDF5 read; unit of shuffling and of the validation split
    m.SYNTH_LABEL_SETS = "both"  # label sets to synthesize: "singleton", "cooccurrence", "both" or "none"
    m.PLOT_BASELINE_JSON = ""  # results.json of a baseline run: plot per-label AP change vs it (paper Fig. 4)
    m.PLOT_TOP_N = 15  # Fig. 4 plot: number of labels with the largest gains and with the largest drops
    m.SYNTHETIC = CN()
    m.SYNTHETIC.DIR = ""  # where the generated benchmark is written / reused; "" = OUTPUT_DIR/synthetic_data
    m.SYNTHETIC.NUM_SEEN = 40  # seen classes S
    m.SYNTHETIC.NUM_UNSEEN = 10  # unseen classes U
    m.SYNTHETIC.FEATURE_DIM = 128  # feature dimension d
    m.SYNTHETIC.EMBED_DIM = 64  # class-embedding dimension a
    m.SYNTHETIC.NUM_TRAIN = 4000  # seen-train images (no unseen label)
    m.SYNTHETIC.NUM_ZSL_TEST = 1000  # ZSL test images (at least one unseen label)
    m.SYNTHETIC.NUM_GZSL_TEST = 1500  # GZSL test images (any labels)
    m.SYNTHETIC.MAX_LABELS = 3  # labels per image, uniform in [1, MAX_LABELS]
    m.SYNTHETIC.NUM_TOPICS = 8  # co-occurrence topics (sparse class distributions)
    m.SYNTHETIC.PROTOTYPE_NOISE = 0.3  # std of the class-specific part of a prototype (not predictable from e(k))
    m.SYNTHETIC.FEATURE_NOISE = 1.0  # std of the per-image feature noise
    m.SYNTHETIC.SIGNED_LABELS = False  # write negatives as -1 (signed layout) instead of 0
    m.SYNTHETIC.SEED = 0  # seed of the generated data
