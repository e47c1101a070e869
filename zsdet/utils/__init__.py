"""Small helpers outside the training path: drawing detections (:mod:`.visualize`)."""
from .visualize import SEEN_COLOR, UNSEEN_COLOR, draw_zsd_detections, select_detections

__all__ = ["SEEN_COLOR", "UNSEEN_COLOR", "draw_zsd_detections", "select_detections"]
