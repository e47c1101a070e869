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
from ..data.seeded_rng import PerImageSeededMapper
from ..data.zsd_split import ZeroShotSplit, class_embeddings_from_config
from ..evaluation import ZSDEvaluator
from ..modeling import RoIFeatureExtractor, SemanticProjectionClassifier
from ..synthesis.quality import assess, read_report, write_report
from ..synthesis.selection import read_rows
from ..utils.io import write_bytes
from .box_classifier import fit_box_classifier, soft_targets
from .checkpoints import checkpoint_problem, classifier_record, load_detector_weights
from .detection_trainer import ZSDTrainer
from .roi_stages import (foreground_rows, generator_source, load_bank, load_generator, real_training_set,
                         save_with_classifier, synthesis_trainer, validation_background)
from .synthesis_classifier import train_synthesis_classifier
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
        return load_bank(self.bank_dir, self.split, self.train_set)

    def run_generator(self):
        bank = self._bank()
        train_rows, val_rows = foreground_rows(self.cfg, bank, self.split.seen_ids)
        train = generator_source(self.cfg, bank, train_rows, self.cfg.ZSD.FEATURES.SAMPLES_PER_EPOCH)
        logger.info("generator: %d train / %d validation foreground RoIs; %d single RoIs per pass",
                    len(train_rows), len(val_rows), train.singles_per_pass)
        trainer = synthesis_trainer(self.cfg, self.split.class_names, bank.feature_dim, self.generator_dir)
        if not len(val_rows):
            return trainer.fit(train)
        s = self.cfg.SYNTHESIS
        val = generator_source(self.cfg, bank, val_rows)
        background = validation_background(self.cfg, bank, val_rows, s.VAL_SYNTH_SETS,
                                           min(len(val_rows), s.VAL_MAX_SAMPLES))
        result = trainer.fit(train, val, background)
        if comm.is_main_process():  # the selected generator against the held-out real RoIs
            report = assess(trainer, *read_rows(val, s.VAL_MAX_SAMPLES, s.SEED), background)
            result["feature_quality"] = write_report(report, self.generator_dir,
                                                     f"{s.FUSION} {s.GAN}, {self.train_set} validation images")
            logger.info("generator feature quality: %s", result["feature_quality"])
        return result

    # ------------------------------------------------------------------ stages 5-6
    def _classifier_stage(self, weights: str, what: str, build) -> None:
        """Frame shared by the classifier and baseline stages: skip when ``weights`` exists, else
        rank 0 trains ``(classifier, record) = build(bank)`` and saves the detector with it (the
        record as ``classifier_record``). A damaged ``weights`` file (e.g. a full disk) is retrained,
        with a warning naming it."""
        if os.path.isfile(self.path(weights)):
            problem = checkpoint_problem(self.path(weights))
            if problem is None:
                logger.info("%s exists: %s", what, self.path(weights))
                return
            logger.warning("%s %s is unusable (%s): retraining it", what, self.path(weights), problem)
        if comm.is_main_process():
            classifier, record = build(self._bank())
            save_with_classifier(self.detector_weights, classifier, self.path(weights), classifier_record=record)
            logger.info("%s trained: %s", what, record)
        comm.synchronize()

    def _train_synthesis_classifier(self, bank: FeatureBank):
        """Linear classifier over seen + unseen + background (:mod:`.synthesis_classifier`); the
        generator's validation images are held out and calibrate it."""
        _, val_rows = foreground_rows(self.cfg, bank, self.split.seen_ids)
        trainer = load_generator(self.cfg, self.split.class_names, bank.feature_dim, self.generator_dir)
        return train_synthesis_classifier(self.cfg, bank, trainer, self.split.seen_ids, self.split.unseen_ids,
                                          np.unique(bank.image_ids[val_rows]), self.detector_weights)

    def _train_baseline(self, bank: FeatureBank):
        """Semantic-projection classifier; real seen and background features only."""
        x, y = real_training_set(self.cfg, bank, self.split.seen_ids, np.random.default_rng(self.cfg.SEED),
                                 with_mixtures=False)
        emb = torch.from_numpy(class_embeddings_from_config(self.cfg))
        classifier = SemanticProjectionClassifier(bank.feature_dim, emb, self.cfg.MODEL.ZSD.SEMANTIC_TEMPERATURE)
        b, c = self.cfg.ZSD.BASELINE, self.cfg.ZSD.CLASSIFIER
        stats = fit_box_classifier(classifier, x, soft_targets(y), epochs=b.EPOCHS, batch_size=c.BATCH_SIZE,
                                   lr=b.LR, weight_decay=c.WEIGHT_DECAY, seed=self.cfg.SEED)
        return classifier, {"training": stats}

    def run_classifier(self):
        self._classifier_stage("model_zsd.pth", "retrained detector", self._train_synthesis_classifier)

    def run_baseline(self):
        self._classifier_stage("model_baseline.pth", "baseline detector", self._train_baseline)

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
        if "synthesis" in metrics:
            quality = read_report(self.generator_dir)
            calibration = classifier_record(methods["synthesis"][0]).get("gzsd_calibration")
            metrics["synthesis"].update({k: v for k, v in (("feature_quality", quality),
                                                            ("gzsd_calibration", calibration)) if v})
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

