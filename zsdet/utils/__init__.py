"""Helpers of every layer: files written whole and json files read with errors that name them
(:mod:`.io`), drawing detections (:mod:`.visualize`)."""
from .visualize import (SEEN_COLOR, UNSEEN_COLOR, add_legend, draw_zsd_detections, one_label_per_object,
                        place_labels, select_detections)

__all__ = ["SEEN_COLOR", "UNSEEN_COLOR", "add_legend", "draw_zsd_detections",
           "one_label_per_object", "place_labels", "select_detections"]
