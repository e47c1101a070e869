"""Drawing zero-shot detections with detectron2's ``Visualizer``, unseen classes marked.

Seen-class boxes are drawn in :data:`SEEN_COLOR` with labels ``"red square 0.91"``; unseen-class
boxes in :data:`UNSEEN_COLOR` with labels ``"UNSEEN: green cross 0.87"``.
"""
from typing import List, Sequence, Tuple

import numpy as np
import torch
from detectron2.structures import Instances
from detectron2.utils.visualizer import Visualizer

SEEN_COLOR = (0.0, 1.0, 1.0)  # cyan, matplotlib RGB in [0, 1]
UNSEEN_COLOR = (1.0, 0.0, 1.0)  # magenta
UNSEEN_PREFIX = "UNSEEN: "


def select_detections(
    instances: Instances, unseen_class_ids: Sequence[int], score_threshold: float
) -> Tuple[Instances, torch.Tensor]:
    """Detections scoring above ``score_threshold``, on the CPU, and which of them are unseen.

    Args:
        instances: a detector output with ``pred_boxes``, ``scores`` (N,), ``pred_classes`` (N,).
        unseen_class_ids: contiguous ids of the unseen classes.
        score_threshold: detections with ``score > score_threshold`` are kept.

    Returns:
        (kept instances (M entries), unseen mask (M,) bool).
    """
    kept = instances.to("cpu")[instances.scores.cpu() > score_threshold]
    unseen_ids = torch.as_tensor(list(unseen_class_ids), dtype=kept.pred_classes.dtype)
    return kept, torch.isin(kept.pred_classes, unseen_ids)


def _labels(classes: torch.Tensor, scores: torch.Tensor, unseen: torch.Tensor,
            class_names: Sequence[str]) -> List[str]:
    """``"[UNSEEN: ]<class name> <score>"`` per detection."""
    return [f"{UNSEEN_PREFIX if u else ''}{class_names[c]} {s:.2f}"
            for c, s, u in zip(classes.tolist(), scores.tolist(), unseen.tolist())]


def draw_zsd_detections(
    image_bgr: np.ndarray,
    instances: Instances,
    metadata,
    unseen_class_ids: Sequence[int],
    score_threshold: float,
    scale: float = 1.0,
) -> np.ndarray:
    """Draw the detections above ``score_threshold`` on an image, unseen classes marked.

    Args:
        image_bgr: (H, W, 3) uint8 image in BGR order (as ``cv2.imread`` returns it).
        instances: detector output for this image (``pred_boxes`` in image pixels, ``scores``,
            ``pred_classes``), on any device.
        metadata: the dataset's ``Metadata``; ``thing_classes`` names the predicted class ids.
        unseen_class_ids: contiguous ids of the unseen classes.
        score_threshold: detections with ``score > score_threshold`` are drawn.
        scale: output size / input size (``Visualizer``'s scale; > 1 makes labels on small
            images legible).

    Returns:
        (H * scale, W * scale, 3) uint8 image in BGR order (ready for ``cv2.imwrite``).
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 image, got {image_bgr.dtype} {image_bgr.shape}")
    dets, unseen = select_detections(instances, unseen_class_ids, score_threshold)
    class_names = metadata.thing_classes
    if len(dets) and int(dets.pred_classes.max()) >= len(class_names):
        raise ValueError(f"predicted class id {int(dets.pred_classes.max())} outside the "
                         f"{len(class_names)} thing_classes of dataset {metadata.name!r}")
    colors = np.where(unseen[:, None].numpy(), UNSEEN_COLOR, SEEN_COLOR)
    vis = Visualizer(image_bgr[:, :, ::-1], metadata=metadata, scale=scale)
    drawn = vis.overlay_instances(
        boxes=dets.pred_boxes.tensor.numpy(),
        labels=_labels(dets.pred_classes, dets.scores, unseen, class_names),
        assigned_colors=[tuple(c) for c in colors],
    )
    return np.ascontiguousarray(drawn.get_image()[:, :, ::-1])
