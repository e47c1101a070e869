"""The top layer: the detection trainer and pipeline (:mod:`.zsd_pipeline`, its RoI stages in
:mod:`.roi_stages`), adding classes to a trained detector (:mod:`.add_classes`), the classification
runner (:mod:`.classification`) and what the tools share (:mod:`.defaults`). The generator trainer
is in :mod:`zsdet.synthesis`."""
from .checkpoints import load_detector_weights
from .detection_trainer import ZSDTrainer
from .zsd_pipeline import STAGES, ZSDPipeline

__all__ = ["STAGES", "ZSDPipeline", "ZSDTrainer", "load_detector_weights"]
