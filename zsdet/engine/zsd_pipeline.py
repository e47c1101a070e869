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
from typing import Dict, Iterable, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model
from detectron2.utils import comm

from ..data.extraction_batches import batches_to_do, extraction_loader
from ..data.feature_bank import (COMPLETE, FeatureBank, FeatureBankWriter, bank_is_complete, coverage_problem,
                                 done_image_ids)
from ..data.seeded_rng import PerImageSeededMapper
from ..data.zsd_split import ZeroShotSplit, class_embeddings_from_config
from ..evaluation import ZSDEvaluator
from ..evaluation.mode_evaluators import ModeEvaluators
from ..modeling import RoIFeatureExtractor, SemanticProjectionClassifier
from ..modeling.multi_mode import MultiModeDetector
from ..synthesis.quality import assess, read_report, write_report
from ..synthesis.selection import read_rows
from ..utils.io import write_bytes
from ..utils.ranks import LONG_WAIT, from_main, run_on_main
from .box_classifier import fit_box_classifier, soft_targets
from .checkpoints import checkpoint_problem, classifier_record, load_detector_weights
from .detection_trainer import ZSDTrainer
from .roi_stages import (foreground_rows, generator_source, load_bank, load_generator, real_training_set,
                         save_with_classifier, synthesis_trainer, validation_background)
from .synthesis_classifier import box_classifier_kind, train_synthesis_classifier
from .settings_check import check_pipeline_settings
from .zsd_report import write_results_report

logger = logging.getLogger(__name__)

STAGES = ("detector", "features", "generator", "classifier", "baseline", "evaluate")
# what the classifier stage records (model_zsd.pth) that metrics.json's "synthesis" entry carries, when present
CLASSIFIER_RECORD_BLOCKS = ("gzsd_calibration", "alignment", "anchoring", "seen_group_negatives")


def pipeline_methods(cfg) -> Tuple[Tuple[str, str, str], ...]:
    """(result name, weights file, ``MODEL.ZSD.CLASSIFIER``) of the methods a run evaluates: the
    synthesis-retrained classifier (:func:`.synthesis_classifier.box_classifier_kind`) and the
    semantic baseline."""
    return (("synthesis", "model_zsd.pth", box_classifier_kind(cfg)), ("baseline", "model_baseline.pth", "semantic"))


def same_images(*datasets: str) -> bool:
    """Whether the registered ``datasets`` list the same images (ids and files) in the same order."""
    images = [[(d["image_id"], d["file_name"]) for d in DatasetCatalog.get(name)] for name in datasets]
    return all(i == images[0] for i in images[1:])


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
    def _detector_done(self) -> bool:
        """Whether ``model_final.pth`` is usable; a damaged one is removed (training resumes from the
        newest intact checkpoint). Rank 0 decides for every rank."""
        if not os.path.isfile(self.detector_weights):
            return False
        problem = checkpoint_problem(self.detector_weights)
        if problem is None:
            return True
        logger.warning("seen detector %s is unusable (%s): training resumes from the newest intact "
                       "checkpoint", self.detector_weights, problem)
        os.remove(self.detector_weights)
        return False

    def run_detector(self):
        if run_on_main(self._detector_done):
            logger.info("seen detector exists: %s (delete it to retrain)", self.detector_weights)
            return None
        cfg = self._with(MODE="seen")
        trainer = ZSDTrainer(cfg)
        trainer.resume_or_load(resume=True)
        return trainer.train()

    # ------------------------------------------------------------------ stage 2
    def run_features(self):
        if run_on_main(lambda: bank_is_complete(self.bank_dir)):  # rank 0 checks (and sets damaged parts aside)
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
        dicts = DatasetCatalog.get(self.train_set)
        # one to-do list, from the parts as rank 0 finds them, for every rank: none extracts an
        # image twice or skips one because another rank committed parts meanwhile
        batches = run_on_main(lambda: batches_to_do(dicts, done_image_ids(self.bank_dir), f.IMAGES_PER_BATCH))
        todo = sum(len(b) for b in batches)
        logger.info("RoI features: %d images to do (%d already in the bank) in batches of up to %d images, "
                    "read by %d workers per process", todo, len(dicts) - todo, f.IMAGES_PER_BATCH,
                    cfg.DATALOADER.NUM_WORKERS)
        if batches:
            # the training mapper (resize + flip, GT instances kept), as SUZOD extracts features;
            # seeded per image, so each image's rows depend on (SEED, image id, its batch) only
            mapper = PerImageSeededMapper(DatasetMapper(cfg, is_train=True), cfg.SEED)
            writer = FeatureBankWriter(self.bank_dir, detector.roi_heads.box_head.output_shape.channels,
                                       self.split.class_names, flush_every=f.FLUSH_EVERY)
            inference_on_dataset(extractor, extraction_loader(dicts, batches, mapper, cfg.DATALOADER.NUM_WORKERS),
                                 writer)
        run_on_main(lambda: self._complete_bank(dicts))
        return None

    def _complete_bank(self, dicts) -> None:
        """Write ``roi_bank/COMPLETE`` once every training image is in the bank exactly once, else
        raise ``ValueError`` naming the missing and duplicated images."""
        problem = coverage_problem(self.bank_dir, [d["image_id"] for d in dicts],
                                   {d["image_id"]: d["file_name"] for d in dicts})
        if problem:
            raise ValueError(problem)
        write_bytes(os.path.join(self.bank_dir, COMPLETE), b"")

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
        record as ``classifier_record``) while the other ranks wait (minutes at COCO scale, beyond the
        default 30-minute barrier). A damaged ``weights`` file (e.g. a full disk) is retrained, with a
        warning naming it."""
        problem = run_on_main(lambda: checkpoint_problem(self.path(weights)) if os.path.isfile(self.path(weights))
                              else "missing")
        if problem is None:
            logger.info("%s exists: %s", what, self.path(weights))
            return
        if problem != "missing":
            logger.warning("%s %s is unusable (%s): retraining it", what, self.path(weights), problem)

        def train_and_save():
            classifier, record = build(self._bank())
            save_with_classifier(self.detector_weights, classifier, self.path(weights), classifier_record=record)
            logger.info("%s trained: %s", what, record)

        run_on_main(train_and_save, timeout=LONG_WAIT)

    def _train_synthesis_classifier(self, bank: FeatureBank):
        """Box classifier (linear, or an MLP) over seen + unseen + background (:mod:`.synthesis_classifier`); the
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
        """ZSD on ``ZSD.TEST_ZSD`` and GZSD on ``ZSD.TEST_GZSD`` of the detector ``weights`` with box
        classifier ``classifier``; one inference pass scores both when the two sets hold the same
        images (:class:`MultiModeDetector`: the modes share the boxes), else one pass each."""
        datasets = {mode: dataset for mode, dataset in (("zsd", self.cfg.ZSD.TEST_ZSD),
                                                        ("gzsd", self.cfg.ZSD.TEST_GZSD)) if dataset}
        evaluators = {mode: ZSDEvaluator(dataset, os.path.join(self.out, "inference", f"{name}_{mode}"), mode=mode)
                      for mode, dataset in datasets.items()}
        if len(datasets) == 2 and same_images(*datasets.values()):
            model = MultiModeDetector(self._detector(weights, classifier, "gzsd"), list(datasets))
            loader = build_detection_test_loader(self.cfg, datasets["gzsd"])
            return inference_on_dataset(model, loader, ModeEvaluators(evaluators))
        results = {}
        for mode, dataset in datasets.items():
            results.update(inference_on_dataset(self._detector(weights, classifier, mode),
                                                build_detection_test_loader(self.cfg, dataset), evaluators[mode]))
        return results

    def _detector(self, weights: str, classifier: str, mode: str):
        model = build_model(self._with(MODE=mode, CLASSIFIER=classifier))
        load_detector_weights(model, weights)
        return model

    def run_evaluate(self):
        runs = pipeline_methods(self.cfg)
        exists = from_main({weights: os.path.isfile(self.path(weights)) for _, weights, _ in runs})
        methods = {name: (self.path(weights), classifier) for name, weights, classifier in runs if exists[weights]}
        missing = [weights for weights, there in exists.items() if not there]
        if missing:
            logger.warning("not evaluated (run their stages first): %s", missing)
        return self.evaluate_and_report(methods)

    def evaluate_and_report(self, methods: Dict[str, tuple]) -> Dict:
        """Evaluate ``{name: (weights file, MODEL.ZSD.CLASSIFIER)}``; print the table, write metrics.json."""
        metrics = {name: self.evaluate_method(weights, classifier, name)
                   for name, (weights, classifier) in methods.items()}
        if "synthesis" in metrics:
            quality = read_report(self.generator_dir)
            record = classifier_record(methods["synthesis"][0])
            blocks = {"feature_quality": quality, **{k: record.get(k) for k in CLASSIFIER_RECORD_BLOCKS}}
            metrics["synthesis"].update({k: v for k, v in blocks.items() if v})
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

