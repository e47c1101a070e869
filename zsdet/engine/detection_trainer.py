"""detectron2 ``DefaultTrainer`` for the seen-class detector and ZSD evaluation."""
import os

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

from ..evaluation import ZSDEvaluator


TRAINING_METRICS = "detector_metrics.json"


class ZSDTrainer(DefaultTrainer):
    """Stage-1 trainer; evaluators are chosen by each test set's ``evaluator_type``.

    Training metrics go to ``detector_metrics.json`` (JSON lines) and TensorBoard, so that the
    pipeline's final ``metrics.json`` in the same folder holds only the ZSD / GZSD figures.
    """

    def build_writers(self):
        out = self.cfg.OUTPUT_DIR
        return [CommonMetricPrinter(self.max_iter), JSONWriter(os.path.join(out, TRAINING_METRICS)),
                TensorboardXWriter(out)]

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
