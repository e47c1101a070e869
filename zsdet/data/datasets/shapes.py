"""The built-in synthetic ZSD dataset: coloured geometric shapes on a textured, noisy background.

Each class is a (colour, shape) pair; its name is ``"<colour> <shape>"`` and its embedding is built
from its attributes: one-hot colour, one-hot shape, plus ``embedding_noise_dims`` fixed random
"semantic noise" dims, L2-normalised. A block of pairs is unseen (default: 2 colours x 2 shapes),
chosen so that every unseen colour and shape also occurs in seen classes and the unseen classes
share attributes with each other: neither attribute alone identifies an unseen class.

Splits, all in one class index space (``thing_classes`` = every pair, colour-major order):

* ``<prefix>_train``: seen objects only (an unseen object never appears).
* ``<prefix>_val``: seen objects only, disjoint images (model selection).
* ``<prefix>_test_zsd``: images with >= 1 unseen object (plus seen objects); GT = unseen boxes.
* ``<prefix>_test_gzsd``: the same images; GT = all boxes.

The set is generated deterministically (``np.random.Generator`` seeded per image from ``seed``;
bit-identical output for the same numpy / OpenCV versions) on
the first ``DatasetCatalog.get``, as PNG images + one COCO json per split, into
``<root>/<prefix>_<config hash>/`` (root default ``$DETECTRON2_DATASETS/zsd_shapes``), written to a
temporary folder and renamed into place, and then read with detectron2's ``load_coco_json``, the
same path COCO takes. Layout of a generated folder::

    images/{train,val,test}/000000.png
    annotations/{train,val,test_zsd,test_gzsd}.json
    class_embeddings.tsv        (class name, tab, floats; rows in thing_classes order)
    dataset.json                (the generator options; written last = the set is complete)
"""
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from tqdm import tqdm

from ...utils.io import write_json
from ..embeddings import normalize_embeddings, write_embedding_table

logger = logging.getLogger(__name__)

# Bump when the generator's output changes for the same options (old folders are then not reused).
GENERATOR_VERSION = 1

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

SPLITS = ("train", "val", "test_zsd", "test_gzsd")
_IMAGE_SETS = {"train": 0, "val": 1, "test": 2}  # image folder -> RNG stream / image-id block
_ZSD_MODES = {"train": "seen", "val": "seen", "test_zsd": "zsd", "test_gzsd": "gzsd"}
_MAX_ROTATION_DEG = 15.0  # small, so a rotated square stays a square (not a diamond)
_PLACEMENT_TRIES = 30
_MARGIN = 2  # px kept free between object boxes, so every box is fully visible


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
    """Options of the synthetic shapes generator (every field is part of the folder hash).

    Attributes:
        colours: colour names (keys of ``PALETTE``).
        shapes: shape names (keys of ``SHAPES``).
        unseen: (colour, shape) pairs held out as unseen classes.
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
    image_size: int = 128
    objects_per_image: Tuple[int, int] = (1, 4)
    object_size: Tuple[int, int] = (18, 48)
    num_train: int = 600
    num_val: int = 100
    num_test: int = 200
    embedding_noise_dims: int = 4
    embedding_noise_scale: float = 0.1
    seed: int = 0

    def __post_init__(self):
        # accept lists (e.g. from YAML / json) while keeping the dataclass hashable
        for name in ("colours", "shapes", "objects_per_image", "object_size"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "unseen", tuple(tuple(pair) for pair in self.unseen))
        self._validate()

    def _validate(self):
        unknown = [c for c in self.colours if c not in PALETTE]
        unknown += [s for s in self.shapes if s not in SHAPES]
        if unknown:
            raise KeyError(f"unknown colours/shapes {unknown}; available: "
                           f"colours {sorted(PALETTE)}, shapes {sorted(SHAPES)}")
        if len(set(self.colours)) != len(self.colours) or len(set(self.shapes)) != len(self.shapes):
            raise ValueError(f"repeated colour or shape in {self.colours} / {self.shapes}")
        bad = [p for p in self.unseen if len(p) != 2 or p not in self.class_pairs]
        if bad or len(set(self.unseen)) != len(self.unseen):
            raise ValueError(f"unseen pairs {bad or self.unseen} must be distinct (colour, shape) "
                             f"pairs of colours {self.colours} and shapes {self.shapes}")
        if not self.unseen or len(self.unseen) == len(self.class_pairs):
            raise ValueError("need at least one seen and one unseen (colour, shape) pair")
        seen = [self.class_pairs[i] for i in self.seen_ids]
        orphans = ({c for c, _ in self.unseen} - {c for c, _ in seen}) | (
            {s for _, s in self.unseen} - {s for _, s in seen})
        if orphans:
            raise ValueError(f"unseen attributes {sorted(orphans)} occur in no seen class, so "
                             "they cannot be learnt from seen data")
        lo, hi = self.object_size
        if not (lo >= 4 and lo <= hi and hi * np.sqrt(2) + 2 * _MARGIN < self.image_size):
            raise ValueError(f"object_size {self.object_size} must satisfy 4 <= min <= max and "
                             f"max * sqrt(2) + {2 * _MARGIN} < image_size {self.image_size}")
        if not 1 <= self.objects_per_image[0] <= self.objects_per_image[1]:
            raise ValueError(f"objects_per_image {self.objects_per_image} must be 1 <= min <= max")
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be >= 1")

    @property
    def class_pairs(self) -> List[Tuple[str, str]]:
        return [(c, s) for c in self.colours for s in self.shapes]

    @property
    def class_names(self) -> List[str]:
        return [f"{c} {s}" for c, s in self.class_pairs]

    @property
    def unseen_ids(self) -> List[int]:
        return sorted(self.class_pairs.index(pair) for pair in self.unseen)

    @property
    def seen_ids(self) -> List[int]:
        unseen = set(self.unseen_ids)
        return [i for i in range(len(self.class_pairs)) if i not in unseen]

    def digest(self) -> str:
        """8 hex digits identifying the generated content (options + generator version)."""
        blob = json.dumps([GENERATOR_VERSION, dataclasses.asdict(self)], sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:8]


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
    image = cv2.GaussianBlur(image, (3, 3), 0.7) + rng.normal(0, 6, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), objects


def image_classes(rng: np.random.Generator, config, image_set: str) -> np.ndarray:
    """Class ids of one image: seen-only for train/val; test: one unseen first, then any class.

    ``config`` needs ``objects_per_image``, ``seen_ids``, ``unseen_ids`` and ``class_names``.
    """
    count = rng.integers(config.objects_per_image[0], config.objects_per_image[1] + 1)
    if image_set != "test":
        return rng.choice(config.seen_ids, count)
    others = rng.integers(0, len(config.class_names), count - 1)
    return np.concatenate([rng.choice(config.unseen_ids, 1), others])


def _draw_shapes_image(rng: np.random.Generator, config: ShapesConfig, image_set: str):
    return render_image(rng, config, image_classes(rng, config, image_set))


# --------------------------------------------------------------------------------------------
# writing


def generate_shapes_dataset(out_dir: str, config: ShapesConfig) -> None:
    """Write the dataset (images, split jsons, embeddings, ``dataset.json``) into ``out_dir``."""
    write_synthetic_dataset(out_dir, config, _draw_shapes_image, shape_class_embeddings(config),
                            name="zsd_shapes", description="zsdet synthetic shapes",
                            version=GENERATOR_VERSION)


def write_synthetic_dataset(out_dir: str, config, draw, embeddings: np.ndarray, name: str,
                            description: str, version: int) -> None:
    """Write a generated ZSD set (images, split jsons, embeddings, ``dataset.json``) into ``out_dir``.

    Args:
        config: a frozen generator-options dataclass with ``class_names``, ``seen_ids``,
            ``unseen_ids``, ``image_size``, ``num_train`` / ``num_val`` / ``num_test``, ``seed``
            and ``digest()``.
        draw: ``draw(rng, config, image_set) -> (pixels (S, S, 3) uint8 RGB, objects)`` with
            objects as returned by :func:`render_image`; ``rng`` is seeded per image.
        embeddings: (C, a) class embeddings in ``class_names`` order.
        name, description: progress-bar label; json ``info`` description prefix.
        version: generator version written into ``dataset.json``.
    """
    categories = [{"id": i + 1, "name": class_name, "supercategory": "shape"}
                  for i, class_name in enumerate(config.class_names)]
    unseen = set(config.unseen_ids)
    annotations: Dict[str, List[Dict]] = {split: [] for split in SPLITS}
    images: Dict[str, List[Dict]] = {split: [] for split in SPLITS}
    counts = {"train": config.num_train, "val": config.num_val, "test": config.num_test}
    bar = tqdm(total=sum(counts.values()), desc=name, unit="img", disable=None)
    for image_set, count in counts.items():
        os.makedirs(os.path.join(out_dir, "images", image_set))
        splits = ("test_zsd", "test_gzsd") if image_set == "test" else (image_set,)
        for index in range(count):
            rng = np.random.default_rng([config.seed, _IMAGE_SETS[image_set], index])
            pixels, objects = draw(rng, config, image_set)
            file_name = f"{image_set}/{index:06d}.png"
            cv2.imwrite(os.path.join(out_dir, "images", file_name), pixels[..., ::-1])  # RGB->BGR
            image_id = _IMAGE_SETS[image_set] * 1_000_000 + index + 1
            for split in splits:
                images[split].append({"id": image_id, "file_name": file_name,
                                      "height": config.image_size, "width": config.image_size})
                gt = [o for o in objects if split != "test_zsd" or o["category"] in unseen]
                first_id = len(annotations[split]) + 1
                annotations[split] += [
                    {"id": first_id + k, "image_id": image_id, "category_id": o["category"] + 1,
                     "bbox": o["bbox"], "area": o["area"], "iscrowd": 0}
                    for k, o in enumerate(gt)
                ]
            bar.update()
    bar.close()
    os.makedirs(os.path.join(out_dir, "annotations"))
    for split in SPLITS:
        info = {"description": f"{description}, split {split}", "version": config.digest()}
        write_json(os.path.join(out_dir, "annotations", f"{split}.json"),
                   {"info": info, "images": images[split], "annotations": annotations[split],
                    "categories": categories}, indent=None)
    write_embedding_table(os.path.join(out_dir, "class_embeddings.tsv"), config.class_names,
                          embeddings)
    write_json(os.path.join(out_dir, "dataset.json"),  # last: marks a complete set
               {"generator_version": version, **dataclasses.asdict(config)}, indent=None)


def ensure_generated(dataset_dir: str, config, generate=None) -> None:
    """Generate the dataset into ``dataset_dir`` with ``generate(folder, config)`` (default
    :func:`generate_shapes_dataset`) unless it is complete there already.

    Generation writes to a temporary sibling folder that is renamed into place, so a killed run
    leaves no half-written set; when several processes race, the first rename wins.
    """
    if os.path.isfile(os.path.join(dataset_dir, "dataset.json")):
        return
    generate = generate or generate_shapes_dataset
    parent = os.path.dirname(dataset_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dataset_dir)}.tmp-", dir=parent)
    start = time.perf_counter()
    logger.info(f"Generating the synthetic dataset into {dataset_dir} ...")
    try:
        generate(tmp, config)
        try:
            os.rename(tmp, dataset_dir)
        except OSError:
            if not os.path.isfile(os.path.join(dataset_dir, "dataset.json")):
                raise OSError(f"{dataset_dir} exists but holds no complete dataset "
                              "(no dataset.json): delete it and retry") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info(f"Generated {dataset_dir} in {time.perf_counter() - start:.1f} s")


def _load_split(dataset_dir: str, config, generate, split: str, name: str) -> List[Dict]:
    ensure_generated(dataset_dir, config, generate)
    return load_coco_json(os.path.join(dataset_dir, "annotations", f"{split}.json"),
                          os.path.join(dataset_dir, "images"), name)


def default_root() -> str:
    """``$DETECTRON2_DATASETS/zsd_shapes`` (``DETECTRON2_DATASETS`` defaults to ``datasets``)."""
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "zsd_shapes")


def register_zsd_shapes(prefix: str = "zsd_shapes", root: Optional[str] = None,
                        **generator_options) -> List[str]:
    """Register ``<prefix>_{train,val,test_zsd,test_gzsd}`` (nothing is generated until used).

    Args:
        prefix: dataset-name prefix.
        root: parent folder of the generated set (default :func:`default_root`, made absolute at
            registration); the set lives in ``<root>/<prefix>_<config digest>``.
        generator_options: fields of :class:`ShapesConfig`.

    Returns:
        The four dataset names. Registering the same prefix again with the same options is a
        no-op; with different options it is a ``ValueError``.
    """
    config = ShapesConfig(**generator_options)
    dataset_dir = os.path.abspath(os.path.join(root or default_root(),
                                               f"{prefix}_{config.digest()}"))
    return register_synthetic_splits(prefix, dataset_dir, config, generate_shapes_dataset,
                                     shape_class_embeddings(config),
                                     [PALETTE[c] for c, _ in config.class_pairs])


def register_synthetic_splits(prefix: str, dataset_dir: str, config, generate,
                              embeddings: np.ndarray, thing_colors: Sequence) -> List[str]:
    """Register ``<prefix>_{train,val,test_zsd,test_gzsd}`` of a set that ``generate(folder,
    config)`` writes into ``dataset_dir`` on first use (see :func:`write_synthetic_dataset`).

    Registering the same prefix again for the same folder is a no-op; for another folder it is a
    ``ValueError``. Returns the four dataset names.
    """
    names = [f"{prefix}_{split}" for split in SPLITS]
    if names[0] in DatasetCatalog:
        existing = MetadataCatalog.get(names[0]).get("dataset_dir")
        if existing != dataset_dir:
            raise ValueError(f"dataset {names[0]!r} is already registered for {existing}, "
                             f"not {dataset_dir}: use another prefix for other options")
        return names
    common = dict(
        thing_classes=config.class_names,
        seen_classes=[config.class_names[i] for i in config.seen_ids],
        unseen_classes=[config.class_names[i] for i in config.unseen_ids],
        class_embeddings=embeddings.tolist(),
        class_embeddings_file=os.path.join(dataset_dir, "class_embeddings.tsv"),
        thing_colors=list(thing_colors),
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(config.class_names))},
        evaluator_type="zsd",
        image_root=os.path.join(dataset_dir, "images"),
        dataset_dir=dataset_dir,
    )
    for split, name in zip(SPLITS, names):
        loader = functools.partial(_load_split, dataset_dir, config, generate, split, name)
        DatasetCatalog.register(name, loader)
        MetadataCatalog.get(name).set(
            json_file=os.path.join(dataset_dir, "annotations", f"{split}.json"),
            zsd_mode=_ZSD_MODES[split], **common,
        )
    return names


register_zsd_shapes("zsd_shapes")
register_zsd_shapes("zsd_shapes_tiny", image_size=96, object_size=(14, 36),
                    num_train=40, num_val=10, num_test=20)
