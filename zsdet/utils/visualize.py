"""Drawing zero-shot detections: seen and unseen classes in two colours, labels that do not overlap.

Boxes are drawn by detectron2's ``Visualizer``: seen classes in :data:`SEEN_COLOR`, unseen classes
in :data:`UNSEEN_COLOR`. Each label (``"red square 0.91"``, ``"UNSEEN: green cross 0.87"``) sits in
a box of its group's colour, placed by :func:`place_labels` beside its detection where it covers
no label placed before it (higher scores choose first). :func:`one_label_per_object` keeps one
detection per object (class-agnostic NMS on the final scores), and :func:`add_legend` appends a
strip naming the two colours.
"""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.layers import nms
from detectron2.structures import Instances
from detectron2.utils.visualizer import Visualizer

SEEN_COLOR = (0.0, 1.0, 1.0)  # cyan, matplotlib RGB in [0, 1]
UNSEEN_COLOR = (1.0, 0.0, 1.0)  # magenta
UNSEEN_PREFIX = "UNSEEN: "
FONT = cv2.FONT_HERSHEY_SIMPLEX
LEGEND_BACKGROUND = (40, 40, 40)  # BGR


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


def one_label_per_object(instances: Instances, iou_threshold: float) -> Instances:
    """Class-agnostic NMS on the final scores: of detections whose boxes overlap with IoU above
    ``iou_threshold``, whatever their classes, only the highest-scoring one stays. GZSD scoring
    may label one object with a seen and an unseen class (two detections, near-identical boxes);
    this keeps its best label. Returns the kept detections by descending score."""
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"label NMS IoU threshold must lie in [0, 1], got {iou_threshold}")
    keep = nms(instances.pred_boxes.tensor.float(), instances.scores.float(), iou_threshold)
    return instances[keep]


def _labels(classes: torch.Tensor, scores: torch.Tensor, unseen: torch.Tensor,
            class_names: Sequence[str]) -> List[str]:
    """``"[UNSEEN: ]<class name> <score>"`` per detection."""
    return [f"{UNSEEN_PREFIX if u else ''}{class_names[c]} {s:.2f}"
            for c, s, u in zip(classes.tolist(), scores.tolist(), unseen.tolist())]


def _font(image_shape) -> Tuple[float, int]:
    """(cv2 font scale, thickness) for an image of this (H, W, ...) shape: ~11 px high text on a
    512 x 512 image, growing with the image."""
    font_scale = float(np.clip(np.sqrt(image_shape[0] * image_shape[1]) / 1100, 0.4, 1.2))
    return font_scale, 1 if font_scale < 0.8 else 2


def place_labels(boxes: np.ndarray, sizes: np.ndarray, image_size: Tuple[int, int]) -> np.ndarray:
    """Where to put each detection's label so that labels do not overlap.

    In the given order (put the best detection first), each label takes the first of its
    candidate places (above its box at the left, inside its top, below it, inside its bottom, the
    same at the right, then further above and below) that lies in the image and overlaps no label
    placed before it; if every candidate overlaps, the one overlapping least.

    Args:
        boxes: (N, 4) XYXY detection boxes in output pixels.
        sizes: (N, 2) label (width, height) in output pixels.
        image_size: (height, width) of the output image.

    Returns:
        (N, 4) int XYXY label rectangles, inside the image where the label fits.
    """
    height, width = image_size
    placed = np.zeros((0, 4))
    for (x1, y1, x2, y2), (w, h) in zip(np.asarray(boxes, float), np.asarray(sizes, float)):
        tops = [y1 - h, y1, y2, y2 - h]
        candidates = np.array(
            [[x1, t] for t in tops] + [[x2 - w, t] for t in tops]
            + [[x1, y1 - k * h] for k in (2, 3)] + [[x1, y2 + k * h] for k in (1, 2)])
        candidates[:, 0] = np.clip(candidates[:, 0], 0, max(width - w, 0))
        candidates[:, 1] = np.clip(candidates[:, 1], 0, max(height - h, 0))
        rects = np.hstack([candidates, candidates + [w, h]])  # (K, 4)
        overlap_w = np.minimum(rects[:, None, 2], placed[None, :, 2]) - np.maximum(
            rects[:, None, 0], placed[None, :, 0])
        overlap_h = np.minimum(rects[:, None, 3], placed[None, :, 3]) - np.maximum(
            rects[:, None, 1], placed[None, :, 1])
        overlap = (np.clip(overlap_w, 0, None) * np.clip(overlap_h, 0, None)).sum(axis=1)
        placed = np.vstack([placed, rects[np.argmin(overlap)]])  # argmin: first of the least
    return placed.round().astype(np.int64)


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
    order = torch.argsort(dets.scores, descending=True, stable=True)  # best labels placed first
    dets, unseen = dets[order], unseen[order]
    class_names = metadata.thing_classes
    if len(dets) and int(dets.pred_classes.max()) >= len(class_names):
        raise ValueError(f"predicted class id {int(dets.pred_classes.max())} outside the "
                         f"{len(class_names)} thing_classes of dataset {metadata.name!r}")
    colors = np.where(unseen[:, None].numpy(), UNSEEN_COLOR, SEEN_COLOR)
    vis = Visualizer(image_bgr[:, :, ::-1], metadata=metadata, scale=scale)
    drawn = vis.overlay_instances(boxes=dets.pred_boxes.tensor.numpy(),
                                  assigned_colors=[tuple(c) for c in colors])
    out = np.ascontiguousarray(drawn.get_image()[:, :, ::-1])
    if len(dets) == 0:
        return out
    labels = _labels(dets.pred_classes, dets.scores, unseen, class_names)
    font_scale, thickness = _font(out.shape)
    text_sizes = [cv2.getTextSize(t, FONT, font_scale, thickness) for t in labels]
    pad = max(2, int(round(3 * font_scale)))
    sizes = np.array([[w + 2 * pad, h + base + 2 * pad] for (w, h), base in text_sizes])
    out_scale = np.array([out.shape[1] / image_bgr.shape[1], out.shape[0] / image_bgr.shape[0]])
    rects = place_labels(dets.pred_boxes.tensor.numpy() * np.tile(out_scale, 2), sizes,
                         out.shape[:2])
    for text, (x1, y1, x2, y2), (_, base), color in zip(labels, rects, text_sizes, colors):
        cv2.rectangle(out, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1),
                      tuple(int(255 * c) for c in color[::-1]), thickness=-1)
        cv2.putText(out, text, (int(x1) + pad, int(y2) - pad - base), FONT, font_scale,
                    (0, 0, 0), thickness, cv2.LINE_AA)
    return out


def add_legend(image_bgr: np.ndarray, note: Optional[str] = None) -> np.ndarray:
    """The image with a strip below it naming the two label colours (seen / unseen class) and an
    optional ``note`` (e.g. the scoring used; on a second line when the first is full).
    Returns (H + strip, W, 3) uint8 BGR."""
    font_scale, thickness = _font(image_bgr.shape)
    (_, text_h), base = cv2.getTextSize("Ag", FONT, font_scale, thickness)
    line_h = 2 * (text_h + base)

    def width(text):
        return cv2.getTextSize(text, FONT, font_scale, thickness)[0][0]

    swatches = [("seen class", SEEN_COLOR), ("unseen class", UNSEEN_COLOR)]
    x_note = sum(2 * text_h + width(t) + text_h // 2 for t, _ in swatches) + text_h // 2
    second_line = note is not None and x_note + width(note) > image_bgr.shape[1]
    strip = np.empty((line_h * (2 if second_line else 1), image_bgr.shape[1], 3), np.uint8)
    strip[:] = LEGEND_BACKGROUND
    x, y_text = text_h // 2, (line_h + text_h) // 2
    for text, color in swatches:
        cv2.rectangle(strip, (x, y_text - text_h), (x + text_h, y_text),
                      tuple(int(255 * c) for c in color[::-1]), thickness=-1)
        x += text_h + text_h // 2
        cv2.putText(strip, text, (x, y_text), FONT, font_scale, (255, 255, 255), thickness,
                    cv2.LINE_AA)
        x += width(text) + text_h
    if note is not None:
        x, y = (text_h // 2, y_text + line_h) if second_line else (x_note, y_text)
        cv2.putText(strip, note, (x, y), FONT, font_scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return np.vstack([image_bgr, strip])
