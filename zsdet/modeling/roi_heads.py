"""ROI heads of the zero-shot detector: detectron2's standard heads with :class:`ZSDOutputLayers`.

Besides the usual training / inference, :meth:`ZSDROIHeads.box_features` exposes the box head's
output (the feature the classification layer reads, e.g. 1024-d "fc7" for R-101-FPN) for given
boxes, which the RoI feature bank stores and the generator learns to synthesize.
"""
from typing import Dict, List

import torch
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.structures import Boxes

from .zsd_predictor import ZSDOutputLayers


@ROI_HEADS_REGISTRY.register()
class ZSDROIHeads(StandardROIHeads):
    """``StandardROIHeads`` whose box predictor is :class:`ZSDOutputLayers`."""

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        if not cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG:
            raise ValueError(
                "ZSDROIHeads needs MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG=True: unseen classes "
                "have no trained class-specific box regressor"
            )
        ret["box_predictor"] = ZSDOutputLayers(cfg, ret["box_head"].output_shape)
        return ret

    def box_features(self, features: Dict[str, torch.Tensor], boxes: List[Boxes]) -> torch.Tensor:
        """Box-head features for given boxes.

        Args:
            features: backbone feature maps by name.
            boxes: per-image boxes in the (resized) input-image coordinates.

        Returns:
            (sum_i len(boxes[i]), d) float tensor, rows in image-then-box order.
        """
        maps = [features[f] for f in self.box_in_features]
        return self.box_head(self.box_pooler(maps, boxes))
