"""A fake COCO 2014 in the official layout, for dress rehearsals of the COCO route without COCO.

:func:`write_fake_coco` writes ``<coco_dir>/annotations/instances_{train,val}2014.json`` and small
JPEG images ``<coco_dir>/{train2014,val2014}/COCO_<split>2014_<id:012d>.jpg`` with the structure
that the real files have and that the ZSD split rules (``prepare_coco_zsd.py``) and detectron2
react to:

* the real 80 categories (COCO ids 1-90 with gaps, official names), read from the shipped split
  table (``datasets/coco_zsd/split_65_15.tsv``);
* COCO-like image shapes (640x480, 480x640, 640x427, 500x375, 612x612, ...) scaled by ``scale``
  (default 0.1: 64x48 etc.), each JPEG exactly as large as its json ``width`` / ``height`` (else
  detectron2 raises ``SizeMismatchError``); large random COCO-like image ids;
* 1-10 objects per image, ``person`` the most frequent class, every class of the split present
  with valid boxes in several images;
  float ``[x, y, w, h]`` boxes, ``area`` below the box area (a polygon's), polygon segmentation,
  crowd boxes (``iscrowd=1``, RLE segmentation) and boxes of zero width;
* images of every kind the split rules tell apart (``TRAIN_KINDS`` / ``VAL_KINDS``): seen objects
  only, seen + unseen, seen + an unseen *crowd* box, unseen only, no annotation at all, a shorter
  side below 32 px at full scale, only degenerate or only crowd seen boxes.

Deterministic for a seed. Only the jsons' structure is COCO's; the pixels are coloured rectangles
on noise, so detection figures on it mean nothing.

:func:`write_standin_backbone` stands in for the ImageNet-pretrained backbone that the COCO config
downloads (``MODEL.WEIGHTS``), which cannot be fetched offline: the config's own ResNet, randomly
initialised, with its frozen batch-norm statistics calibrated on a few images (with
``MODEL.WEIGHTS ""`` the ``FrozenBN`` layers of ResNet-101 are identities and the activations blow
up through its residual blocks, beyond the float16 range of the RoI bank).
"""
import csv
import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_backbone
from pycocotools import mask as mask_utils

from ...utils.io import write_json, write_torch
from ..shipped import resolve_data_path
from ..zsd_split import ZeroShotSplit
from .coco_zsd import load_class_split

CATEGORY_TABLE = "zsdet://coco_zsd/split_65_15.tsv"
# COCO 2014's frequent image shapes (width, height) at full size; SMALL_SHAPE has a shorter side
# below 32 px once scaled by 0.1, so that the min-size rule of the exclusive splits drops images.
IMAGE_SHAPES = ((640, 480), (480, 640), (640, 427), (427, 640), (500, 375), (640, 360),
                (612, 612), (640, 512))
SMALL_SHAPE = (640, 240)
# image kind -> number of images. Kinds: "seen" (seen objects), "mixed" (seen + unseen),
# "unseen_crowd" (seen + one unseen crowd box), "unseen_only", "empty" (no annotation),
# "small" (seen objects, small image), "unseen_small" (unseen only, small image),
# "seen_degenerate_only" (one seen box of zero width), "seen_crowd_only" (one seen crowd box),
# "unseen_degenerate" (seen objects + an unseen box of zero width).
TRAIN_KINDS = {"seen": 44, "mixed": 4, "unseen_crowd": 2, "unseen_only": 2, "empty": 2,
               "small": 2, "seen_degenerate_only": 1, "seen_crowd_only": 1}
VAL_KINDS = {"mixed": 8, "unseen_only": 4, "unseen_small": 1, "seen": 4, "empty": 2,
             "unseen_crowd": 2, "unseen_degenerate": 1}
CROWD_RATE = 0.1  # share of images with an extra crowd box (COCO: about 1 % of the boxes)
ZERO_WIDTH_RATE = 0.1  # share of images with an extra box of zero width


def coco_categories() -> List[Dict]:
    """The 80 COCO 2014 categories ``{"id", "name", "supercategory"}`` in id order, from the
    shipped class table (the supercategory is not in it and left empty)."""
    with open(resolve_data_path(CATEGORY_TABLE), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [{"id": int(r["coco_category_id"]), "name": r["name"], "supercategory": ""}
            for r in rows]


class _ClassCycle:
    """Classes handed out in a fixed random cycle, so that every class occurs and in many images."""

    def __init__(self, ids: List[int], rng: np.random.Generator):
        self.order, self.pos = rng.permutation(ids).tolist(), 0

    def take(self, n: int) -> List[int]:
        out = [self.order[(self.pos + i) % len(self.order)] for i in range(n)]
        self.pos += n
        return out


def _box(rng: np.random.Generator, width: int, height: int, zero_width: bool) -> List[float]:
    """A float ``[x, y, w, h]`` box inside the image (2 decimals, as COCO's)."""
    w = 0.0 if zero_width else rng.uniform(0.2, 0.6) * width
    h = rng.uniform(0.2, 0.6) * height
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    return [round(float(v), 2) for v in (x, y, w, h)]


def _annotation(rng, ann_id: int, image: Dict, category: int, crowd: bool, zero_width: bool):
    width, height = image["width"], image["height"]
    x, y, w, h = box = _box(rng, width, height, zero_width)
    if crowd:  # RLE of the box, as COCO stores crowd regions
        pixels = np.zeros((height, width), np.uint8, order="F")
        pixels[int(y):int(np.ceil(y + h)), int(x):int(np.ceil(x + w))] = 1
        rle = mask_utils.encode(pixels)
        segmentation = {"counts": rle["counts"].decode("ascii"), "size": rle["size"]}
    else:  # a diamond inscribed in the box: area half the box's
        segmentation = [[x + w / 2, y, x + w, y + h / 2, x + w / 2, y + h, x, y + h / 2]]
    return {"id": ann_id, "image_id": image["id"], "category_id": category,
            "segmentation": segmentation, "area": round(w * h / 2, 2), "bbox": box,
            "iscrowd": int(crowd)}


def _objects(kind: str, rng: np.random.Generator, seen: _ClassCycle, unseen: _ClassCycle,
             person: int) -> List[Tuple[int, bool, bool]]:
    """(category id, crowd, zero width) of the objects of an image of ``kind``. Classes of valid
    boxes come from the cycles (so each class keeps its valid boxes); crowd and zero-width boxes
    are extra objects of a random class of the same group."""
    def group(cycle, n):
        objects = [(c, False, False) for c in cycle.take(n)]
        for crowd, rate in ((True, CROWD_RATE), (False, ZERO_WIDTH_RATE)):
            if rng.random() < rate:
                objects.append((int(rng.choice(cycle.order)), crowd, not crowd))
        return objects

    if kind == "empty":
        return []
    if kind == "seen_degenerate_only":
        return [(seen.take(1)[0], False, True)]
    if kind == "seen_crowd_only":
        return [(seen.take(1)[0], True, False)]
    if kind in ("unseen_only", "unseen_small"):
        return group(unseen, int(rng.integers(1, 4)))
    objects = group(seen, int(rng.integers(2, 8)))
    if rng.random() < 0.5:
        objects.append((person, False, False))  # person: COCO's most frequent class
    if kind == "mixed":
        objects += group(unseen, int(rng.integers(1, 3)))
    elif kind == "unseen_crowd":
        objects.append((unseen.take(1)[0], True, False))
    elif kind == "unseen_degenerate":
        objects.append((unseen.take(1)[0], False, True))
    return objects


def _render(rng: np.random.Generator, image: Dict, annotations: List[Dict]) -> np.ndarray:
    """BGR pixels: noise with one rectangle per box, coloured by category."""
    pixels = rng.integers(60, 190, size=(image["height"], image["width"], 3), dtype=np.uint8)
    for a in annotations:
        x, y, w, h = a["bbox"]
        colour = np.random.default_rng(a["category_id"]).integers(0, 256, 3).tolist()
        cv2.rectangle(pixels, (int(x), int(y)), (int(x + w), int(y + h)), colour, thickness=-1)
    return pixels


def _write_split(coco_dir: str, split: str, kinds: Dict[str, int], categories: List[Dict],
                 class_split: ZeroShotSplit, scale: float, rng: np.random.Generator,
                 first_ann_id: int) -> Dict:
    ids = {c["name"]: c["id"] for c in categories}
    seen = _ClassCycle([ids[n] for n in class_split.seen], rng)
    unseen = _ClassCycle([ids[n] for n in class_split.unseen], rng)
    kind_list = rng.permutation([k for k, n in kinds.items() for _ in range(n)]).tolist()
    image_ids = np.sort(rng.choice(np.arange(1, 581930), size=len(kind_list), replace=False))
    folder = os.path.join(coco_dir, f"{split}2014")
    os.makedirs(folder, exist_ok=True)
    images, annotations = [], []
    for image_id, kind in zip(image_ids.tolist(), kind_list):
        small = kind in ("small", "unseen_small")
        full = SMALL_SHAPE if small else IMAGE_SHAPES[int(rng.integers(len(IMAGE_SHAPES)))]
        width, height = (max(1, int(round(v * scale))) for v in full)
        name = f"COCO_{split}2014_{image_id:012d}.jpg"
        image = {"license": 1, "file_name": name, "coco_url": "", "height": height,
                 "width": width, "date_captured": "2013-11-14 16:28:13", "flickr_url": "",
                 "id": image_id}
        anns = [_annotation(rng, first_ann_id + len(annotations) + k, image, c, crowd, zero)
                for k, (c, crowd, zero) in enumerate(
                    _objects(kind, rng, seen, unseen, ids["person"]))]
        cv2.imwrite(os.path.join(folder, name), _render(rng, image, anns),
                    [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append(image)
        annotations += anns
    return {"info": {"description": f"zsdet fake COCO 2014 {split} (dress rehearsal)",
                     "year": 2014},
            "licenses": [{"id": 1, "name": "none", "url": ""}],
            "images": images, "annotations": annotations, "categories": categories}


def write_fake_coco(coco_dir: str, class_split: Optional[ZeroShotSplit] = None, *,
                    scale: float = 0.1, seed: int = 0,
                    train_kinds: Dict[str, int] = TRAIN_KINDS,
                    val_kinds: Dict[str, int] = VAL_KINDS) -> Dict[str, str]:
    """Write the fake COCO 2014 (module docstring) into ``coco_dir`` (e.g.
    ``$DETECTRON2_DATASETS/coco``).

    Args:
        class_split: which classes are unseen, deciding which images get which objects
            (default: COCO 65/15).
        scale: image and box size relative to COCO's (0.1: 64x48 for a 640x480 image).
        seed: seed of everything drawn.
        train_kinds, val_kinds: image kind -> number of images (kinds in ``TRAIN_KINDS``' comment).

    Returns:
        ``{"train": path, "val": path}`` of the two instances jsons.
    """
    categories = coco_categories()
    class_split = class_split or load_class_split(None, [c["name"] for c in categories])
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(coco_dir, "annotations"), exist_ok=True)
    paths, first_ann_id = {}, 1
    for split, kinds in (("train", train_kinds), ("val", val_kinds)):
        coco = _write_split(coco_dir, split, kinds, categories, class_split, scale, rng,
                            first_ann_id)
        first_ann_id += len(coco["annotations"])
        paths[split] = os.path.join(coco_dir, "annotations", f"instances_{split}2014.json")
        write_json(paths[split], coco, indent=None)
    return paths


def _calibrate(norm: FrozenBatchNorm2d, inputs: Tuple[torch.Tensor]) -> None:
    """Forward pre-hook: set the frozen statistics to the input's per-channel mean / variance."""
    x = inputs[0]
    norm.running_mean.copy_(x.mean(dim=(0, 2, 3)))
    norm.running_var.copy_(x.var(dim=(0, 2, 3)))


def write_standin_backbone(cfg, image_files: Sequence[str], path: str, seed: int = 0) -> str:
    """Write a stand-in for the pretrained backbone of ``cfg`` (module docstring) to ``path``.

    The backbone of ``cfg`` (e.g. ResNet-101 with ``FrozenBN``) is built with seed ``seed``; one
    forward pass over ``image_files`` (BGR, resized to the first one's size, normalised with
    ``cfg.MODEL.PIXEL_MEAN`` / ``PIXEL_STD``) sets each frozen batch-norm layer's statistics from
    its input, in network order, so every such layer outputs zero-mean, unit-variance channels.
    Saved as a detectron2 checkpoint ``{"model": {"backbone.bottom_up.<name>": tensor}}``, the
    part an ImageNet checkpoint provides; the rest of the detector starts from its initialisation.
    """
    torch.manual_seed(seed)
    bottom_up = build_backbone(cfg).bottom_up.eval()
    first = cv2.imread(image_files[0])
    size = (first.shape[1], first.shape[0])
    pixels = np.stack([cv2.resize(cv2.imread(f), size) for f in image_files]).astype(np.float32)
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(1, -1, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(1, -1, 1, 1)
    images = (torch.from_numpy(pixels).permute(0, 3, 1, 2) - mean) / std
    hooks = [m.register_forward_pre_hook(_calibrate) for m in bottom_up.modules()
             if isinstance(m, FrozenBatchNorm2d)]
    if not hooks:
        raise ValueError(f"the backbone of MODEL.RESNETS.NORM={cfg.MODEL.RESNETS.NORM!r} has no "
                         "FrozenBN layer to calibrate")
    with torch.no_grad():
        bottom_up(images)
    for hook in hooks:
        hook.remove()
    state = {f"backbone.bottom_up.{k}": v for k, v in bottom_up.state_dict().items()}
    write_torch(path, {"model": state})
    return path
