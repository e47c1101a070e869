"""Training loops: the detection trainer and pipeline (the generator trainer is in zsdet.synthesis)."""
from .checkpoints import load_detector_weights
from .detection_trainer import ZSDTrainer
from .zsd_pipeline import STAGES, ZSDPipeline

__all__ = ["STAGES", "ZSDPipeline", "ZSDTrainer", "load_detector_weights"]
