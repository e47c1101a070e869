"""Detector components registered in detectron2's registries on import."""
from .mlp_classifier import MLPBoxClassifier, SeenGroupMLPClassifier, SeenGroupMLPs
from .roi_feature_extractor import RoIFeatureExtractor
from .roi_heads import ZSDROIHeads
from .semantic_classifier import SemanticProjectionClassifier
from .zsd_predictor import ZSDOutputLayers, zsd_split_from_config

__all__ = ["RoIFeatureExtractor", "ZSDROIHeads", "ZSDOutputLayers", "SemanticProjectionClassifier", "MLPBoxClassifier",
           "SeenGroupMLPClassifier", "SeenGroupMLPs", "zsd_split_from_config"]
