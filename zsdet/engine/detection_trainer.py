"""detectron2 ``DefaultTrainer`` for the seen-class detector and ZSD evaluation, with exact resume.

A run killed at any point and restarted continues as if it had never stopped (bit-identical on
the CPU): checkpoints hold the optimizer state (momentum) and the LR scheduler, the training
batches are a pure function of (``SEED``, iteration) (:mod:`zsdet.data.train_stream`), and the
global random generators (RPN / RoI sampling) are reseeded from (``SEED``, iteration, rank) before
every step; the initial weights depend on ``SEED`` only. Checkpoints are written atomically (:class:`AtomicDetectionCheckpointer`).
"""
import logging
import os

from detectron2.data import DatasetMapper, MetadataCatalog, get_detection_dataset_dicts
from detectron2.engine import DefaultTrainer, HookBase
from detectron2.engine.train_loop import TrainerBase
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

from ..data.seeded_rng import MODEL_INIT, TRAIN_STEP, derive_seed, seed_global_rngs, seeded_global_rngs
from ..data.train_stream import TrainStream
from ..evaluation import ZSDEvaluator
from .checkpoints import AtomicDetectionCheckpointer

logger = logging.getLogger(__name__)

TRAINING_METRICS = "detector_metrics.json"
FINAL_WEIGHTS = "model_final.pth"


def run_seed(cfg) -> int:
    """``cfg.SEED``, which must be >= 0: initial weights, data order, augmentation and sampling
    derive from it, which is what makes a resumed run equal an uninterrupted one."""
    if cfg.SEED < 0:
        raise ValueError(f"SEED={cfg.SEED}: zsdet trains the detector with a fixed SEED >= 0 (initial "
                         "weights, data order, augmentation and sampling derive from it)")
    return cfg.SEED


class _OptimizerStateMissing(KeyError):
    """A checkpoint without the ``_trainer`` (optimizer) state."""


class SeedEveryStep(HookBase):
    """Reseed python / numpy / torch global generators from (seed, iteration, rank) before each step."""

    def __init__(self, seed: int):
        self.seed = seed

    def before_step(self):
        seed_global_rngs(derive_seed(self.seed, TRAIN_STEP, self.trainer.iter, comm.get_rank()))


class ZSDTrainer(DefaultTrainer):
    """Stage-1 trainer; evaluators are chosen by each test set's ``evaluator_type``.

    Training metrics go to ``detector_metrics.json`` (JSON lines) and TensorBoard, so that the
    pipeline's final ``metrics.json`` in the same folder holds only the ZSD / GZSD figures.
    """

    @classmethod
    def build_model(cls, cfg):
        """detectron2's model, initialised from ``SEED`` alone (not from what the process drew before)."""
        with seeded_global_rngs(derive_seed(run_seed(cfg), MODEL_INIT)):
            return super().build_model(cfg)

    @classmethod
    def build_train_loader(cls, cfg):
        """A :class:`TrainStream` (same dataset dicts and mapper as detectron2's default loader)."""
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            raise ValueError(f"DATALOADER.SAMPLER_TRAIN={cfg.DATALOADER.SAMPLER_TRAIN!r} is not supported: "
                             "zsdet's resumable training stream samples like 'TrainingSampler'")
        dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None)
        return TrainStream(dicts, DatasetMapper(cfg, is_train=True), run_seed(cfg), cfg.SOLVER.IMS_PER_BATCH,
                           aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
                           num_workers=cfg.DATALOADER.NUM_WORKERS)

    def build_hooks(self):
        c = self.checkpointer  # DefaultTrainer's, replaced before its hooks capture it
        self.checkpointer = AtomicDetectionCheckpointer(c.model, c.save_dir, save_to_disk=c.save_to_disk,
                                                        **c.checkpointables)
        return [SeedEveryStep(self.data_loader.seed)] + super().build_hooks()

    def build_writers(self):
        out = self.cfg.OUTPUT_DIR
        return [CommonMetricPrinter(self.max_iter), JSONWriter(os.path.join(out, TRAINING_METRICS)),
                TensorboardXWriter(out)]

    # detectron2 v0.6 saves no optimizer state (main does, under "_trainer"): same layout on both
    def state_dict(self):
        state = TrainerBase.state_dict(self)
        state["_trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state_dict):
        if "_trainer" not in state_dict:
            raise _OptimizerStateMissing("_trainer")
        TrainerBase.load_state_dict(self, state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])

    def resume_or_load(self, resume=True):
        """detectron2's resume, from the newest intact checkpoint, then the data stream is moved
        to the first iteration to run."""
        if resume and comm.is_main_process():
            self.checkpointer.repair_last_checkpoint()
        comm.synchronize()
        try:
            super().resume_or_load(resume=resume)
        except _OptimizerStateMissing:
            raise ValueError(
                f"{self.checkpointer.get_checkpoint_file()} holds no optimizer state (written by "
                "detectron2 v0.6's DefaultTrainer or an older zsdet), so training cannot continue "
                f"exactly from it. Delete {os.path.join(self.cfg.OUTPUT_DIR, 'last_checkpoint')} and the "
                "model_*.pth files beside it to retrain the detector, or start a new OUTPUT_DIR with "
                "MODEL.WEIGHTS set to that file to train on from its weights") from None
        if self.start_iter and self.cfg.MODEL.DEVICE == "cpu":
            logger.info("resuming the detector at iteration %d: same batches, augmentations, "
                        "sampling and optimizer state as an uninterrupted run", self.start_iter)
        elif self.start_iter:
            logger.warning("resuming the detector at iteration %d on %s: batches, augmentations, "
                           "sampling and optimizer state are restored, but GPU kernels are not "
                           "deterministic, so the weights will differ slightly from an uninterrupted "
                           "run (as two uninterrupted GPU runs do)", self.start_iter, self.cfg.MODEL.DEVICE)
        self.data_loader.start_iter = self.start_iter

    def train(self):
        result = super().train()
        final = os.path.join(self.cfg.OUTPUT_DIR, FINAL_WEIGHTS)
        if comm.is_main_process() and not os.path.isfile(final):  # resumed at MAX_ITER: no step ran
            self.checkpointer.save(FINAL_WEIGHTS[: -len(".pth")], iteration=self.max_iter - 1)
        comm.synchronize()
        return result

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if evaluator_type == "zsd":
            return ZSDEvaluator(dataset_name, output_folder)  # mode from the dataset's zsd_mode
        if evaluator_type == "coco":
            # use_fast_impl=False: the fast COCO-eval op lives in detectron2._C (may be absent).
            return COCOEvaluator(dataset_name, tasks=("bbox",), distributed=True,
                                 output_dir=output_folder, use_fast_impl=False)
        raise NotImplementedError(f"no evaluator for {dataset_name!r} (evaluator_type={evaluator_type!r})")
