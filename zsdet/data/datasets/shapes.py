"""The built-in synthetic ZSD dataset: coloured geometric shapes on a textured, noisy background.

Each class is a (colour, shape) pair named ``"<colour> <shape>"``; its embedding is built from its
attributes: one-hot colour, one-hot shape, plus ``embedding_noise_dims`` fixed random "semantic
noise" dims, L2-normalised. A block of pairs is unseen (default: 2 colours x 2 shapes), chosen so
that every unseen colour and shape also occurs in seen classes and the unseen classes share
attributes with each other: neither attribute alone identifies an unseen class.

Splits, generation and folder layout: :mod:`.generated` (``<prefix>_{train,val,test_zsd,test_gzsd}``
in ``$DETECTRON2_DATASETS/zsd_shapes/<prefix>_<digest>/``; bit-identical output for the same numpy
/ OpenCV versions). The drawing helpers here are shared with :mod:`.dense_scenes`.
"""
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..embeddings import normalize_embeddings
from .generated import GeneratedSetConfig, register_generated_splits, write_generated_dataset
from .generated import held_out_world as generated_held_out_world

PALETTE = {  # RGB
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 80, 225),
    "yellow": (235, 210, 40),
    "magenta": (205, 50, 200),
    "cyan": (40, 200, 215),
    "orange": (240, 130, 30),
    "white": (245, 245, 245),
}


def _regular_polygon(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return _regular_polygon(2 * points) * radii[:, None]


_T = 1 / 3  # half-width of a cross arm
# Unit outlines (x, y) in [-1, 1], y pointing down (image coordinates).
SHAPES = {
    "circle": _regular_polygon(48),
    "square": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float),
    "triangle": np.array([[0, -1], [1, 1], [-1, 1]], dtype=float),
    "cross": np.array([[-_T, -1], [_T, -1], [_T, -_T], [1, -_T], [1, _T], [_T, _T], [_T, 1],
                       [-_T, 1], [-_T, _T], [-1, _T], [-1, -_T], [-_T, -_T]], dtype=float),
    "star": _star(),
    "diamond": np.array([[0, -1], [0.7, 0], [0, 1], [-0.7, 0]], dtype=float),
    "hexagon": _regular_polygon(6),
}

_MAX_ROTATION_DEG = 15.0  # small, so a rotated square stays a square (not a diamond)
_PLACEMENT_TRIES = 30
_MARGIN = 2  # px kept free between object boxes, so every box is fully visible


@dataclasses.dataclass(frozen=True)
class ShapesConfig(GeneratedSetConfig):
    """Options of the synthetic shapes generator (every field is part of the folder hash).

    Attributes:
        colours: colour names (keys of ``PALETTE``).
        shapes: shape names (keys of ``SHAPES``).
        unseen: (colour, shape) pairs held out as unseen classes.
        absent: unseen pairs drawn in no image (validation worlds, :func:`held_out_world`).
        image_size: side of the square images, px.
        objects_per_image: inclusive (min, max) number of objects drawn per image.
        object_size: inclusive (min, max) side of an object's unrotated outline, px.
        num_train / num_val / num_test: images per split (test_zsd and test_gzsd share images).
        embedding_noise_dims: extra fixed random dims appended to each class embedding.
        embedding_noise_scale: standard deviation of those dims (before L2 normalisation).
        seed: seed of every random choice.
    """

    colours: Tuple[str, ...] = ("red", "green", "blue", "yellow")
    shapes: Tuple[str, ...] = ("circle", "square", "triangle", "cross")
    unseen: Tuple[Tuple[str, str], ...] = (
        ("green", "triangle"), ("green", "cross"), ("yellow", "triangle"), ("yellow", "cross"),
    )
    absent: Tuple[Tuple[str, str], ...] = ()
    image_size: int = 128
    objects_per_image: Tuple[int, int] = (1, 4)
    object_size: Tuple[int, int] = (18, 48)
    num_train: int = 600
    num_val: int = 100
    num_test: int = 200
    embedding_noise_dims: int = 4
    embedding_noise_scale: float = 0.1
    seed: int = 0

    NAME, DESCRIPTION = "zsd_shapes", "zsdet synthetic shapes"
    ATTRIBUTE_FIELDS = ("colours", "shapes")
    generator_version = 1  # bump when the output changes for the same options (old folders are not reused)

    def _validate(self):
        unknown = [c for c in self.colours if c not in PALETTE]
        unknown += [s for s in self.shapes if s not in SHAPES]
        if unknown:
            raise KeyError(f"unknown colours/shapes {unknown}; available: "
                           f"colours {sorted(PALETTE)}, shapes {sorted(SHAPES)}")
        if len(set(self.colours)) != len(self.colours) or len(set(self.shapes)) != len(self.shapes):
            raise ValueError(f"repeated colour or shape in {self.colours} / {self.shapes}")
        super()._validate()
        lo, hi = self.object_size
        if not (lo >= 4 and lo <= hi and hi * np.sqrt(2) + 2 * _MARGIN < self.image_size):
            raise ValueError(f"object_size {self.object_size} must satisfy 4 <= min <= max and "
                             f"max * sqrt(2) + {2 * _MARGIN} < image_size {self.image_size}")

    class_pairs = GeneratedSetConfig.class_attributes  # (colour, shape) of each class

    def generate(self, out_dir: str) -> None:
        generate_shapes_dataset(out_dir, self)


def shape_class_embeddings(config: ShapesConfig) -> np.ndarray:
    """(C, n_colours + n_shapes + noise_dims) float32, L2-normalised rows in class order."""
    pairs = config.class_pairs
    colour_idx = [config.colours.index(c) for c, _ in pairs]
    shape_idx = [config.shapes.index(s) for _, s in pairs]
    rng = np.random.default_rng([config.seed, 1_000_003])  # own stream: independent of images
    noise = rng.normal(0.0, config.embedding_noise_scale, (len(pairs), config.embedding_noise_dims))
    emb = np.concatenate(
        [np.eye(len(config.colours))[colour_idx], np.eye(len(config.shapes))[shape_idx], noise],
        axis=1,
    )
    return normalize_embeddings(emb, "l2", row_names=config.class_names)


# --------------------------------------------------------------------------------------------
# drawing


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32: smooth low-saturation colour blotches and a faint stripe texture."""
    cells = rng.integers(3, 7)
    grey = rng.uniform(70, 180, (cells, cells, 1))
    tint = rng.uniform(-18, 18, (cells, cells, 3))
    bg = cv2.resize((grey + tint).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    freq = rng.uniform(0.05, 0.25)
    angle = rng.uniform(0, np.pi)
    stripes = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 2 * np.pi))
    return bg + rng.uniform(4, 12) * stripes[..., None]


def camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """The drawn float (S, S, 3) ``image`` as a camera sees it: 3x3 Gaussian blur, N(0, 6) pixel
    noise, rounded to uint8."""
    image = cv2.GaussianBlur(image, (3, 3), 0.7) + rng.normal(0, 6, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def object_mask(rng: np.random.Generator, shape: str, size: int, image_size: int,
                centre: np.ndarray) -> np.ndarray:
    """(H, W) bool mask of one shape of outline side ``size`` centred at ``centre`` (x, y)."""
    theta = np.deg2rad(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    points = SHAPES[shape] @ rot.T * (size / 2) + centre
    mask = np.zeros((image_size, image_size), np.uint8)
    # 4 fractional bits: sub-pixel vertex positions
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """[x0, y0, x1, y1] (continuous coordinates, x1/y1 exclusive) of a non-empty mask."""
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=float)


def _boxes_clash(box: np.ndarray, boxes: Sequence[np.ndarray]) -> bool:
    if not boxes:
        return False
    others = np.asarray(boxes)
    grown = box + np.array([-_MARGIN, -_MARGIN, _MARGIN, _MARGIN])
    return bool(np.any((grown[0] < others[:, 2]) & (others[:, 0] < grown[2])
                       & (grown[1] < others[:, 3]) & (others[:, 1] < grown[3])))


def render_image(rng: np.random.Generator, config: ShapesConfig,
                 class_ids: Sequence[int]) -> Tuple[np.ndarray, List[Dict]]:
    """Draw one image with an object of each class in ``class_ids`` (in that order).

    An object that finds no free place in ``_PLACEMENT_TRIES`` tries is left out, so the first
    object is always drawn.

    Returns:
        image: (S, S, 3) uint8 RGB.
        objects: dicts with ``category`` (class index), ``bbox`` [x, y, w, h] (px, XYWH_ABS) and
            ``area`` (object pixels).
    """
    size = config.image_size
    image = background(rng, size)
    boxes, objects = [], []
    for class_id in class_ids:
        colour, shape = config.class_pairs[class_id]
        side = int(rng.integers(config.object_size[0], config.object_size[1] + 1))
        reach = side / np.sqrt(2) + _MARGIN  # half-extent of the outline under any rotation
        for _ in range(_PLACEMENT_TRIES):
            centre = rng.uniform(reach, size - reach, 2)
            mask = object_mask(rng, shape, side, size, centre)
            box = mask_box(mask)
            if not _boxes_clash(box, boxes):
                break
        else:
            continue
        jitter = rng.uniform(-20, 20, 3)
        shading = 1 + 0.15 * (np.linspace(-1, 1, size)[:, None] * rng.uniform(-1, 1))
        image[mask] = (np.asarray(PALETTE[colour]) + jitter) * shading[np.nonzero(mask)[0]]
        boxes.append(box)
        objects.append({"category": int(class_id), "bbox": [*box[:2], *(box[2:] - box[:2])],
                        "area": float(mask.sum())})
    return camera(rng, image), objects


# --------------------------------------------------------------------------------------------
# writing and registration


def generate_shapes_dataset(out_dir: str, config: ShapesConfig) -> None:
    """Write the dataset (images, split jsons, embeddings, ``dataset.json``) into ``out_dir``."""
    write_generated_dataset(out_dir, config, render_image, shape_class_embeddings(config))


def register_zsd_shapes(prefix: str = "zsd_shapes", root: Optional[str] = None, **generator_options) -> List[str]:
    """Register the splits of the shapes set of ``ShapesConfig(**generator_options)`` in ``root``
    (see :func:`~zsdet.data.datasets.generated.register_generated_splits`)."""
    config = ShapesConfig(**generator_options)
    return register_generated_splits(prefix, root, config, shape_class_embeddings(config),
                                     [PALETTE[c] for c, _ in config.class_pairs])


def held_out_world(split: int, num_held_out: int = 3, **generator_options) -> dict:
    """Generator options of validation world ``split`` of ``ShapesConfig(**generator_options)``:
    ``num_held_out`` seen classes held out, each of their colours and shapes left in a training
    class (:func:`.generated.held_out_world`)."""
    return generated_held_out_world(ShapesConfig, split, num_held_out, **generator_options)


HELD_OUT_SPLITS = 4  # validation worlds zsd_shapes_heldout0 ... zsd_shapes_heldout3 (3 held-out classes each)
TINY_OPTIONS = dict(image_size=96, object_size=(14, 36), num_train=40, num_val=10, num_test=20)
register_zsd_shapes("zsd_shapes")
register_zsd_shapes("zsd_shapes_tiny", **TINY_OPTIONS)
for _split in range(HELD_OUT_SPLITS):  # validation worlds (benchmarks/zsd_held_out_validation.py --family shapes)
    register_zsd_shapes(f"zsd_shapes_heldout{_split}", **held_out_world(_split))
    register_zsd_shapes(f"zsd_shapes_tiny_heldout{_split}", **held_out_world(_split, **TINY_OPTIONS))
