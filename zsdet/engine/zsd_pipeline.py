"""The zero-shot detection pipeline, stage by stage (``cfg.ZSD.STAGES``).

1. ``detector``   seen-class Faster R-CNN (:class:`ZSDTrainer`)   -> ``model_final.pth``
2. ``features``   RoI feature bank of the training images        -> ``roi_bank/``
3./4. ``generator`` multi-label mixtures + CLF generator training  -> ``generator/``
5./6. ``classifier`` synthesize unseen features, retrain the box classifier -> ``model_zsd.pth``
   ``baseline``   semantic-projection classifier on seen features -> ``model_baseline.pth``
7. ``evaluate``   ZSD / GZSD evaluation of both                  -> ``metrics.json``, tables, plots

Every stage reads the previous stage's artifacts from ``cfg.OUTPUT_DIR`` and skips itself when
its own artifact is complete, so a killed run restarts where it stopped (stages 1, 2 and 4 also
resume from inside: detectron2 checkpoints, committed bank rows, generator epochs).
"""
import logging
import os
from typing import Dict, Iterable

import numpy as np
import torch
from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model
from detectron2.utils import comm

from ..data.feature_bank import COMPLETE, FeatureBank, FeatureBankWriter, bank_is_complete, done_image_ids
from ..data.mixtures import fuse_mixtures, sample_mixture_sets
from ..data.roi_stream import RoIBankSource
from ..data.row_sampling import balanced_rows
from ..data.seeded_rng import PerImageSeededMapper
from ..data.zsd_split import ZeroShotSplit, class_embeddings_from_config, class_embeddings_source
from ..evaluation import ZSDEvaluator
from ..modeling import RoIFeatureExtractor, SemanticProjectionClassifier
from ..synthesis import LabelSets, SynthesisTrainer
from ..utils.io import write_bytes, write_torch
from .box_classifier import fit_box_classifier, soft_targets
from .checkpoints import CLASSIFIER_PREFIX, checkpoint_problem, load_detector_weights, load_state_dict_file
from .detection_trainer import ZSDTrainer
from .settings_check import check_pipeline_settings
from .zsd_report import write_results_report

logger = logging.getLogger(__name__)

STAGES = ("detector", "features", "generator", "classifier", "baseline", "evaluate")
# (result name, weights file, MODEL.ZSD.CLASSIFIER)
METHODS = (("synthesis", "model_zsd.pth", "linear"), ("baseline", "model_baseline.pth", "semantic"))


class ZSDPipeline:
    """Runs the stages of ``cfg.ZSD.STAGES`` (or the ones given to :meth:`run`) in order."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.out = cfg.OUTPUT_DIR
        self.train_set = cfg.DATASETS.TRAIN[0]
        self.split = ZeroShotSplit.from_dataset(self.train_set)
        self.bank_dir = os.path.join(self.out, "roi_bank")
        self.generator_dir = os.path.join(self.out, "generator")
        self.detector_weights = os.path.join(self.out, "model_final.pth")

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def run(self, stages: Iterable[str] = None) -> Dict:
        stages = list(stages or self.cfg.ZSD.STAGES)
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stages {unknown}; choose from {STAGES}")
        check_pipeline_settings(self.cfg, stages)  # every requested stage's settings, before any work
        results = {}
        for stage in STAGES:
            if stage in stages:
                logger.info("=== stage %s ===", stage)
                results[stage] = getattr(self, f"run_{stage}")()
        return results

    # ------------------------------------------------------------------ stage 1
    def run_detector(self):
        if os.path.isfile(self.detector_weights):
            problem = checkpoint_problem(self.detector_weights)
            if problem is None:
                logger.info("seen detector exists: %s (delete it to retrain)", self.detector_weights)
                return None
            logger.warning("seen detector %s is unusable (%s): training resumes from the newest intact "
                           "checkpoint", self.detector_weights, problem)
            comm.synchronize()  # every rank has checked before rank 0 removes it
            if comm.is_main_process():
                os.remove(self.detector_weights)
        cfg = self._with(MODE="seen")
        trainer = ZSDTrainer(cfg)
        trainer.resume_or_load(resume=True)
        return trainer.train()

    # ------------------------------------------------------------------ stage 2
    def run_features(self):
        marker = os.path.join(self.bank_dir, COMPLETE)
        if bank_is_complete(self.bank_dir):
            logger.info("RoI feature bank complete: %s", self.bank_dir)
            return None
        cfg = self._with(MODE="seen")
        detector = build_model(cfg)
        load_detector_weights(detector, self.detector_weights)
        f = cfg.ZSD.FEATURES
        extractor = RoIFeatureExtractor(detector, fg_iou=f.FG_IOU, bg_iou=f.BG_IOU,
                                        rois_per_image=f.ROIS_PER_IMAGE,
                                        positive_fraction=f.POSITIVE_FRACTION, bg_per_fg=f.BG_PER_FG,
                                        seed=cfg.SEED)
        done = done_image_ids(self.bank_dir) if os.path.isdir(self.bank_dir) else set()
        todo = [d for d in DatasetCatalog.get(self.train_set) if d["image_id"] not in done]
        logger.info("RoI features: %d images to do, %d already in the bank", len(todo), len(done))
        if todo:
            # the training mapper (resize + flip, GT instances kept), as SUZOD extracts features;
            # seeded per image, so each image's rows depend on (SEED, image id) only
            mapper = PerImageSeededMapper(DatasetMapper(cfg, is_train=True), cfg.SEED)
            loader = build_detection_test_loader(todo, mapper=mapper)
            writer = FeatureBankWriter(self.bank_dir, detector.roi_heads.box_head.output_shape.channels,
                                       self.split.class_names, flush_every=f.FLUSH_EVERY)
            inference_on_dataset(extractor, loader, writer)
        if comm.is_main_process():
            write_bytes(marker, b"")
        comm.synchronize()
        return None

    # ------------------------------------------------------------------ stages 3-4
    def _bank(self) -> FeatureBank:
        """The RoI bank index; its classes must be the training set's (else a bank of another split)."""
        bank = FeatureBank(self.bank_dir)
        if list(bank.class_names) != list(self.split.class_names):
            raise ValueError(f"RoI bank {self.bank_dir} was extracted for classes {bank.class_names}, but "
                             f"{self.train_set} has {list(self.split.class_names)}; delete the bank to rebuild it")
        return bank

    def _foreground(self, bank: FeatureBank):
        """Foreground rows of the bank split by image into generator-train / validation rows (indices
        only: ~8 bytes a row). Every seen class must have a foreground row."""
        with_image = bank.image_ids
        fg = bank.foreground_rows()
        bank.check_classes(self.split.seen_ids, fg, "foreground")
        images = np.unique(with_image[fg])
        rng = np.random.default_rng(self.cfg.SEED)
        val_images = rng.choice(images, int(round(self.cfg.ZSD.FEATURES.VAL_FRACTION * len(images))),
                                replace=False)
        is_val = np.isin(with_image[fg], val_images)
        return fg[~is_val], fg[is_val]

    def _source(self, bank: FeatureBank, rows: np.ndarray, samples_per_epoch: int = 0) -> RoIBankSource:
        """Streamed single RoIs + mixtures of ``rows`` (``ZSD.MIXTURES``, ``ZSD.FEATURES.STREAM_*``)."""
        m, f = self.cfg.ZSD.MIXTURES, self.cfg.ZSD.FEATURES  # checked by check_pipeline_settings
        return RoIBankSource(bank, rows, mixture_ratio=m.RATIO, min_set_size=m.MIN_SET_SIZE,
                             max_set_size=m.MAX_SET_SIZE, memory_budget_mb=f.STREAM_MEMORY_MB,
                             block_rows=f.STREAM_BLOCK_ROWS, samples_per_epoch=samples_per_epoch,
                             class_balanced=f.CLASS_BALANCED)

    def _synthesis_trainer(self, feature_dim: int) -> SynthesisTrainer:
        emb = torch.from_numpy(class_embeddings_from_config(self.cfg))
        return SynthesisTrainer.from_config(self.cfg, emb, feature_dim, self.generator_dir,
                                            class_names=self.split.class_names,
                                            embeddings_source=class_embeddings_source(self.cfg))

    def run_generator(self):
        bank = self._bank()
        train_rows, val_rows = self._foreground(bank)
        train = self._source(bank, train_rows, self.cfg.ZSD.FEATURES.SAMPLES_PER_EPOCH)
        logger.info("generator: %d train / %d validation foreground RoIs; %d single RoIs per pass",
                    len(train_rows), len(val_rows), train.singles_per_pass)
        trainer = self._synthesis_trainer(bank.feature_dim)
        return trainer.fit(train, self._source(bank, val_rows) if len(val_rows) else None)

    # ------------------------------------------------------------------ stages 5-6
    def _real_training_set(self, bank: FeatureBank, rng: np.random.Generator, with_mixtures: bool):
        """Real seen features (capped per class), background and mixtures as (x, soft targets).

        Reads only the selected rows (:meth:`FeatureBank.load`, block by block): memory is
        ``REAL_PER_CLASS`` x classes x (1 + BG_PER_FG + MIXTURE_RATIO) rows, not the bank."""
        c = self.cfg.ZSD.CLASSIFIER
        k = bank.num_classes
        fg = bank.foreground_rows()
        bank.check_classes(self.split.seen_ids, fg, "foreground")
        cap = c.REAL_PER_CLASS or len(fg)
        fg = fg[balanced_rows(bank.labels[fg], cap, rng)]
        bg = np.nonzero(bank.labels == k)[0]
        bg = rng.choice(bg, min(len(bg), int(c.BG_PER_FG * len(fg))), replace=False)
        rows = np.sort(np.concatenate([fg, bg]))
        labels = torch.from_numpy(bank.labels[rows].astype(np.int64))
        fg_rows = (labels < k).nonzero()[:, 0]
        num_mix = int(c.MIXTURE_RATIO * len(fg_rows)) if with_mixtures else 0
        x = torch.empty(len(rows) + num_mix, bank.feature_dim)  # rows, then mixtures: no copies
        bank.load(rows, out=x[:len(rows)].numpy())
        y = torch.zeros(len(x), k + 1)
        y[torch.arange(len(rows)), labels] = 1
        if num_mix:
            m = self.cfg.ZSD.MIXTURES
            idx, mask = sample_mixture_sets(len(fg_rows), num_mix, m.MIN_SET_SIZE, m.MAX_SET_SIZE, rng)
            idx, mask = fg_rows[torch.from_numpy(idx)], torch.from_numpy(mask)
            for start in range(0, num_mix, 4096):  # chunks bound the (chunk, set size, d) gather
                part = slice(start, start + 4096)
                dest = slice(len(rows) + start, len(rows) + min(start + 4096, num_mix))
                x[dest], y[dest] = fuse_mixtures(x, labels, idx[part], mask[part], k + 1)
        return x, y

    def _save_with_classifier(self, classifier: torch.nn.Module, name: str, **extra) -> str:
        """Detector weights with the box classifier replaced, written atomically to ``name``
        (relative to ``OUTPUT_DIR``); ``extra`` entries are stored beside ``model``."""
        merged = {k: v for k, v in load_state_dict_file(self.detector_weights).items()
                  if not k.startswith(CLASSIFIER_PREFIX)}
        merged.update({CLASSIFIER_PREFIX + k: v.detach().cpu() for k, v in classifier.state_dict().items()})
        path = self.path(name)
        write_torch(path, {"model": merged, "classifier_type": type(classifier).__name__, **extra})
        return path

    def _classifier_stage(self, weights: str, what: str, build) -> None:
        """Frame shared by the classifier and baseline stages: skip when ``weights`` exists, else
        rank 0 builds ``(classifier, features, soft targets, epochs, lr)`` with ``build(bank, rng)``,
        trains the classifier and saves the detector with it. A damaged ``weights`` file (e.g. a
        full disk) is retrained, with a warning naming it."""
        if os.path.isfile(self.path(weights)):
            problem = checkpoint_problem(self.path(weights))
            if problem is None:
                logger.info("%s exists: %s", what, self.path(weights))
                return
            logger.warning("%s %s is unusable (%s): retraining it", what, self.path(weights), problem)
        if comm.is_main_process():
            bank = self._bank()
            classifier, x, targets, epochs, lr = build(bank, np.random.default_rng(self.cfg.SEED))
            c = self.cfg.ZSD.CLASSIFIER
            stats = fit_box_classifier(classifier, x, targets, epochs=epochs, batch_size=c.BATCH_SIZE,
                                       lr=lr, weight_decay=c.WEIGHT_DECAY, seed=self.cfg.SEED)
            self._save_with_classifier(classifier, weights)
            logger.info("%s trained: %s", what, stats)
        comm.synchronize()

    def _synthesis_training_set(self, bank: FeatureBank, rng: np.random.Generator):
        """Linear classifier over seen + unseen + background; real, mixed and synthesized features."""
        x, y = self._real_training_set(bank, rng, with_mixtures=True)
        trainer = self._synthesis_trainer(bank.feature_dim)
        trainer.load_best()
        unseen = LabelSets.from_lists([[u] for u in self.split.unseen_ids], self.split.num_classes)
        syn_x, syn_y = trainer.synthesize(unseen, self.cfg.SYNTHESIS.NUM_PER_CLASS, seed=self.cfg.SEED)
        syn_y = torch.cat([syn_y, torch.zeros(len(syn_y), 1)], dim=1)  # no background mass
        logger.info("box classifier: %d real + mixed, %d synthesized unseen features", len(x), len(syn_x))
        c = self.cfg.ZSD.CLASSIFIER
        classifier = torch.nn.Linear(bank.feature_dim, self.split.num_classes + 1)
        return (classifier, torch.cat([x, syn_x]), soft_targets(torch.cat([y, syn_y])), c.EPOCHS, c.LR)

    def _baseline_training_set(self, bank: FeatureBank, rng: np.random.Generator):
        """Semantic-projection classifier; real seen and background features only."""
        x, y = self._real_training_set(bank, rng, with_mixtures=False)
        emb = torch.from_numpy(class_embeddings_from_config(self.cfg))
        classifier = SemanticProjectionClassifier(bank.feature_dim, emb, self.cfg.MODEL.ZSD.SEMANTIC_TEMPERATURE)
        b = self.cfg.ZSD.BASELINE
        return classifier, x, soft_targets(y), b.EPOCHS, b.LR

    def run_classifier(self):
        self._classifier_stage("model_zsd.pth", "retrained detector", self._synthesis_training_set)

    def run_baseline(self):
        self._classifier_stage("model_baseline.pth", "baseline detector", self._baseline_training_set)

    # ------------------------------------------------------------------ stage 7
    def evaluate_method(self, weights: str, classifier: str, name: str) -> Dict[str, Dict[str, float]]:
        results = {}
        for mode, dataset in (("zsd", self.cfg.ZSD.TEST_ZSD), ("gzsd", self.cfg.ZSD.TEST_GZSD)):
            if not dataset:
                continue
            cfg = self._with(MODE=mode, CLASSIFIER=classifier)
            model = build_model(cfg)
            load_detector_weights(model, weights)
            evaluator = ZSDEvaluator(dataset, os.path.join(self.out, "inference", f"{name}_{mode}"),
                                     mode=mode)
            results.update(inference_on_dataset(model, build_detection_test_loader(cfg, dataset), evaluator))
        return results

    def run_evaluate(self):
        methods = {name: (self.path(weights), classifier) for name, weights, classifier in METHODS
                   if os.path.isfile(self.path(weights))}
        missing = [weights for _, weights, _ in METHODS if not os.path.isfile(self.path(weights))]
        if missing:
            logger.warning("not evaluated (run their stages first): %s", missing)
        return self.evaluate_and_report(methods)

    def evaluate_and_report(self, methods: Dict[str, tuple]) -> Dict:
        """Evaluate ``{name: (weights file, MODEL.ZSD.CLASSIFIER)}``; print the table, write metrics.json."""
        metrics = {name: self.evaluate_method(weights, classifier, name)
                   for name, (weights, classifier) in methods.items()}
        if comm.is_main_process():
            write_results_report(self.out, metrics)
        return metrics

    def _with(self, **zsd_model_keys):
        """A copy of the config with ``MODEL.ZSD`` keys overridden."""
        cfg = self.cfg.clone()
        cfg.defrost()
        for key, value in zsd_model_keys.items():
            setattr(cfg.MODEL.ZSD, key, value)
        cfg.freeze()
        return cfg

