"""Several scoring modes from one forward pass of the zero-shot detector.

ZSD and GZSD evaluate the same test images with the same detector; the modes (``MODEL.ZSD.MODE``)
differ only in how :class:`~.zsd_predictor.ZSDOutputLayers` turns the box classifier's logits into
class probabilities (and hence in the score threshold and per-class NMS that follow). Backbone,
proposals, box head, classifier logits and the class-agnostic box deltas are the same, so
:class:`MultiModeDetector` runs them once per image and only the predictor's ``inference`` once per
mode: each mode's detections equal those of a detector built with that mode.
"""
import contextlib
from typing import Dict, List, Sequence

from torch import nn

__all__ = ["MultiModeDetector", "scored_as"]


@contextlib.contextmanager
def scored_as(predictor, mode: str):
    """Run the block with the box predictor's ``mode`` set to ``mode`` (restored afterwards)."""
    saved, predictor.mode = predictor.mode, mode
    try:
        yield predictor
    finally:
        predictor.mode = saved


class MultiModeDetector(nn.Module):
    """A ``GeneralizedRCNN`` with :class:`~.roi_heads.ZSDROIHeads`, scored in ``modes`` at once.

    ``forward(batched_inputs)`` (inference only) returns, per image, ``{mode: {"instances":
    Instances}}`` in the input image's size, as ``GeneralizedRCNN`` returns for one mode.
    """

    def __init__(self, detector: nn.Module, modes: Sequence[str]):
        super().__init__()
        self.detector = detector
        self.modes = tuple(modes)

    def forward(self, batched_inputs: List[dict]) -> List[Dict[str, dict]]:
        model, heads = self.detector, self.detector.roi_heads
        images = model.preprocess_image(batched_inputs)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        predictions = heads.box_predictor(heads.box_features(features, [p.proposal_boxes for p in proposals]))
        outputs = [{} for _ in batched_inputs]
        for mode in self.modes:
            with scored_as(heads.box_predictor, mode) as predictor:
                instances, _ = predictor.inference(predictions, proposals)
            instances = heads.forward_with_given_boxes(features, instances)
            for out, result in zip(outputs, model._postprocess(instances, batched_inputs, images.image_sizes)):
                out[mode] = result
        return outputs
