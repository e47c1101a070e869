"""detectron2 ``DefaultTrainer`` for the seen-class detector and ZSD evaluation."""
import os

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator

from ..evaluation import ZSDEvaluator


class ZSDTrainer(DefaultTrainer):
    """Stage-1 trainer; evaluators are chosen by each test set's ``evaluator_type``."""

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
