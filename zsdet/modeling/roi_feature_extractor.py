"""Extract labelled box-head features ("RoI features") from a trained seen-class detector.

Follows the SUZOD extraction recipe (``docs``: zsd_protocol.md §4): RPN proposals plus the ground
truth boxes, foreground when max IoU with a ground-truth box >= ``fg_iou`` (0.6), background when
< ``bg_iou`` (0.3), the rest ignored; up to ``rois_per_image`` sampled RoIs with at most
``positive_fraction`` foreground; background then capped at ``bg_per_fg`` x the image's
foreground count (SUZOD caps per batch of 8 images; we cap per image, which needs no cross-image
state and so shards freely under data-parallel inference). The sampling of each image draws from
a generator seeded by (seed, image id), so its rows do not depend on what the process did before,
on the batch, on the rank or on a resume.
"""
from typing import Dict, List

import torch
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, pairwise_iou
from torch import nn

from ..data.seeded_rng import EXTRACT_SAMPLE, derive_seed, image_key

IGNORE = -1


class RoIFeatureExtractor(nn.Module):
    """Wrap a ``GeneralizedRCNN`` with :class:`ZSDROIHeads`; ``forward`` returns labelled RoI features.

    Args:
        detector: the trained seen detector (kept in eval mode).
        fg_iou, bg_iou: IoU thresholds for foreground / background.
        rois_per_image: RoIs sampled per image before the background cap.
        positive_fraction: largest foreground share of the sampled RoIs.
        bg_per_fg: background RoIs kept per foreground RoI of the image.
        seed: the run's seed; image ``i``'s sampling uses ``derive_seed(seed, EXTRACT_SAMPLE, i)``.

    ``forward(batched_inputs)`` takes detectron2 dataset-mapper dicts with ``instances`` and returns
    one dict per image: ``features`` (n, d) float32, ``labels`` (n,) int64 (class id, or K for
    background), ``image_id``.
    """

    def __init__(self, detector, *, fg_iou=0.6, bg_iou=0.3, rois_per_image=512,
                 positive_fraction=0.25, bg_per_fg=2.0, seed=0):
        super().__init__()
        if not 0 <= bg_iou <= fg_iou <= 1:
            raise ValueError(f"need 0 <= bg_iou ({bg_iou}) <= fg_iou ({fg_iou}) <= 1")
        if seed < 0:
            raise ValueError(f"SEED={seed}: RoI extraction needs SEED >= 0 (each image's rows derive from it)")
        self.detector = detector.eval()
        self.matcher = Matcher([bg_iou, fg_iou], [0, IGNORE, 1], allow_low_quality_matches=False)
        self.rois_per_image = rois_per_image
        self.positive_fraction = positive_fraction
        self.bg_per_fg = bg_per_fg
        self.num_classes = detector.roi_heads.num_classes
        self.seed = seed

    def train(self, mode: bool = True):  # the detector stays in inference mode
        return super().train(False)

    def _sample(self, labels: torch.Tensor, generator: torch.Generator):
        """Indices of the sampled foreground and background RoIs (detectron2's ``subsample_labels``
        drawing from ``generator``, then the background cap)."""
        fg = torch.nonzero((labels != IGNORE) & (labels != self.num_classes)).squeeze(1)
        bg = torch.nonzero(labels == self.num_classes).squeeze(1)
        num_fg = min(fg.numel(), int(self.rois_per_image * self.positive_fraction))
        num_bg = min(bg.numel(), self.rois_per_image - num_fg, int(self.bg_per_fg * num_fg))
        pick_fg = torch.randperm(fg.numel(), generator=generator)[:num_fg].to(fg.device)
        pick_bg = torch.randperm(bg.numel(), generator=generator)[:num_bg].to(bg.device)
        return fg[pick_fg], bg[pick_bg]

    def _label_rois(self, proposals: Boxes, gt, image_id) -> Dict[str, torch.Tensor]:
        """Candidate boxes (proposals + GT) and their labels after sampling; see class docstring."""
        boxes = Boxes.cat([proposals, gt.gt_boxes])
        match_idx, match_label = self.matcher(pairwise_iou(gt.gt_boxes, boxes))
        labels = torch.full_like(match_idx, self.num_classes)
        if len(gt):
            labels = torch.where(match_label == 1, gt.gt_classes[match_idx], labels)
        labels[match_label == IGNORE] = IGNORE
        generator = torch.Generator().manual_seed(derive_seed(self.seed, EXTRACT_SAMPLE, image_key(image_id)))
        fg, bg = self._sample(labels, generator)
        keep = torch.cat([fg, bg])
        return {"boxes": boxes[keep], "labels": labels[keep]}

    @torch.no_grad()
    def forward(self, batched_inputs: List[dict]) -> List[dict]:
        model = self.detector
        images = model.preprocess_image(batched_inputs)
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        gts = [x["instances"].to(images.tensor.device) for x in batched_inputs]
        rois = [self._label_rois(p.proposal_boxes, g, x["image_id"])
                for p, g, x in zip(proposals, gts, batched_inputs)]
        feats = model.roi_heads.box_features(features, [r["boxes"] for r in rois])
        per_image = feats.split([len(r["labels"]) for r in rois])
        return [
            {"features": f.float().cpu(), "labels": r["labels"].cpu(), "image_id": x["image_id"]}
            for f, r, x in zip(per_image, rois, batched_inputs)
        ]
