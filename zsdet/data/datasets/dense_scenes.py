"""The built-in dense-scenes ZSD dataset: a synthetic set on which methods can be ranked.

Classes are (colour, texture, shape) triples named ``"<colour> <texture> <shape>"`` (default
5 x 2 x 4 = 40, 8 unseen). Images are crowded: 5-12 objects that may occlude each other (every
object keeps ``min_visible`` of its pixels; its box is the box of its visible pixels) over
unannotated distractors of non-class shapes. Class embeddings are only partly predictive of
appearance (:func:`dense_class_embeddings`, knob ``embedding_fidelity``). Design and reasons:
``datasets/README.md``, section "Built-in dense scenes".

Splits, generation (deterministic, on first use, into ``$DETECTRON2_DATASETS/zsd_dense/
<prefix>_<digest>/``), folder layout and metadata: :mod:`.generated`; the drawing helpers are
those of :mod:`.shapes`.
"""
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..embeddings import normalize_embeddings
from .generated import GeneratedSetConfig, register_generated_splits, write_generated_dataset
from .generated import held_out_world as generated_held_out_world
from .shapes import PALETTE, SHAPES, background, camera, mask_box, object_mask

TEXTURES = ("solid", "striped")
DISTRACTOR_SHAPES = ("diamond", "hexagon", "star")  # never class shapes (checked)
_STRIPE_DARKNESS = 0.45  # brightness factor of the dark stripes
_PLACEMENT_TRIES = 30
_R2_RIDGE = 0.1  # ridge of :func:`attribute_r2`


@dataclasses.dataclass(frozen=True)
class DenseScenesConfig(GeneratedSetConfig):
    """Options of the dense-scenes generator (every field is part of the folder hash).

    Attributes:
        colours, textures, shapes: attribute values (keys of ``PALETTE``, ``TEXTURES``, ``SHAPES``).
        unseen: (colour, texture, shape) triples held out as unseen classes.
        absent: unseen triples drawn in no image (:func:`held_out_world`).
        image_size: side of the square images, px.
        objects_per_image: inclusive (min, max) objects drawn per image.
        object_size: inclusive (min, max) side of an object's unrotated outline, px.
        min_visible: share of its pixels every object keeps visible when later objects cover it.
        distractors_per_image, distractor_size: inclusive ranges of the unannotated clutter.
        num_train / num_val / num_test: images per split (test_zsd and test_gzsd share images).
        embedding_fidelity: f in [0, 1], how predictive the embeddings are of the attributes.
        embedding_attribute_dims: dims carrying ``sqrt(f) g(attributes) + sqrt(1 - f) noise``.
        embedding_unrelated_dims: dims of class-specific noise unrelated to appearance.
        seed: seed of every random choice.
    """

    colours: Tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta")
    textures: Tuple[str, ...] = TEXTURES
    shapes: Tuple[str, ...] = ("circle", "square", "triangle", "cross")
    unseen: Tuple[Tuple[str, str, str], ...] = (
        ("red", "striped", "circle"), ("green", "solid", "square"),
        ("blue", "striped", "triangle"), ("yellow", "solid", "cross"),
        ("magenta", "striped", "square"), ("red", "solid", "triangle"),
        ("green", "striped", "cross"), ("blue", "solid", "circle"),
    )
    absent: Tuple[Tuple[str, str, str], ...] = ()
    image_size: int = 192
    objects_per_image: Tuple[int, int] = (5, 12)
    object_size: Tuple[int, int] = (20, 52)
    min_visible: float = 0.6
    distractors_per_image: Tuple[int, int] = (2, 5)
    distractor_size: Tuple[int, int] = (12, 40)
    num_train: int = 500
    num_val: int = 60
    num_test: int = 150
    embedding_fidelity: float = 0.6
    embedding_attribute_dims: int = 32
    embedding_unrelated_dims: int = 16
    seed: int = 0

    NAME, DESCRIPTION = "zsd_dense", "zsdet dense scenes"
    ATTRIBUTE_FIELDS = ("colours", "textures", "shapes")
    generator_version = 1  # bump when the output changes for the same options (old folders are not reused)

    def _validate(self):
        families = {"colours": (self.colours, PALETTE), "textures": (self.textures, TEXTURES),
                    "shapes": (self.shapes, set(SHAPES) - set(DISTRACTOR_SHAPES))}
        for family, (values, known) in families.items():
            unknown = [v for v in values if v not in known]
            if unknown or not values or len(set(values)) != len(values):
                raise ValueError(f"{family} {values}: need distinct values from {sorted(known)}"
                                 + (f"; unknown {unknown}" if unknown else ""))
        super()._validate()
        for name in ("object_size", "distractor_size"):
            lo, hi = getattr(self, name)
            if not (4 <= lo <= hi and hi * np.sqrt(2) + 2 < self.image_size):
                raise ValueError(f"{name} {(lo, hi)} must satisfy 4 <= min <= max and "
                                 f"max * sqrt(2) + 2 < image_size {self.image_size}")
        lo, hi = self.distractors_per_image
        if not 0 <= lo <= hi:
            raise ValueError(f"distractors_per_image {(lo, hi)} must satisfy 0 <= min <= max")
        if not 0 < self.min_visible <= 1:
            raise ValueError(f"min_visible must lie in (0, 1], got {self.min_visible}")
        if not 0 <= self.embedding_fidelity <= 1:
            raise ValueError(f"embedding_fidelity must lie in [0, 1], got {self.embedding_fidelity}")
        if self.embedding_attribute_dims < 1 or self.embedding_unrelated_dims < 0:
            raise ValueError("embedding_attribute_dims must be >= 1, embedding_unrelated_dims >= 0")

    class_triples = GeneratedSetConfig.class_attributes  # (colour, texture, shape) of each class

    def generate(self, out_dir: str) -> None:
        generate_dense_dataset(out_dir, self)


# --------------------------------------------------------------------------------------------
# class embeddings


def attribute_codes(config: DenseScenesConfig) -> np.ndarray:
    """(C, n_colours + n_textures + n_shapes) float64 one-hot attribute codes in class order."""
    families = (config.colours, config.textures, config.shapes)
    blocks = [np.eye(len(values))[[values.index(t[k]) for t in config.class_triples]]
              for k, values in enumerate(families)]
    return np.concatenate(blocks, axis=1)


def dense_class_embeddings(config: DenseScenesConfig) -> np.ndarray:
    """(C, attribute_dims + unrelated_dims) float32 L2-normalised class embeddings.

    ``[sqrt(f) g(a_k) + sqrt(1 - f) n_k, u_k]`` with ``a_k`` the attribute code, ``g`` a fixed
    random one-layer tanh map whose outputs are standardised over the classes, ``n_k`` and
    ``u_k`` class-specific N(0, 1) noise and ``f = embedding_fidelity``.
    """
    codes = attribute_codes(config)
    dims = config.embedding_attribute_dims
    rng = np.random.default_rng([config.seed, 2_000_003])  # own stream: independent of images
    weights = rng.normal(0.0, 1.0, (codes.shape[1], dims))
    bias = rng.normal(0.0, 0.5, dims)
    noise = rng.normal(0.0, 1.0, (len(codes), dims))
    unrelated = rng.normal(0.0, 1.0, (len(codes), config.embedding_unrelated_dims))
    mapped = np.tanh(codes @ weights + bias)
    mapped = (mapped - mapped.mean(0)) / np.maximum(mapped.std(0), 1e-8)
    f = config.embedding_fidelity
    emb = np.concatenate([np.sqrt(f) * mapped + np.sqrt(1 - f) * noise, unrelated], axis=1)
    return normalize_embeddings(emb, "l2", row_names=config.class_names)


def attribute_r2(config: DenseScenesConfig, embeddings: Optional[np.ndarray] = None) -> float:
    """Held-out linear R² of the attribute codes from the embeddings (``config``'s, or ``embeddings``
    (C, a) in its class order): ridge regression (with intercept, ridge ``_R2_RIDGE``) fitted on the
    seen classes, R² of the unseen classes' codes against the seen classes' mean code. ``absent``
    unseen classes are left out: of a validation world (:func:`held_out_world`) it scores the
    held-out classes."""
    codes = attribute_codes(config)
    embeddings = dense_class_embeddings(config) if embeddings is None else embeddings
    x = np.concatenate([np.asarray(embeddings, np.float64), np.ones((len(codes), 1))], axis=1)
    absent = {config.class_triples.index(t) for t in config.absent}
    seen, unseen = config.seen_ids, [i for i in config.unseen_ids if i not in absent]
    gram = x[seen].T @ x[seen] + _R2_RIDGE * np.eye(x.shape[1])
    coef = np.linalg.solve(gram, x[seen].T @ codes[seen])
    residual = ((x[unseen] @ coef - codes[unseen]) ** 2).sum()
    total = ((codes[unseen] - codes[seen].mean(0)) ** 2).sum()
    return float(1 - residual / total)


# --------------------------------------------------------------------------------------------
# drawing


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, colour: str,
           texture: str) -> None:
    """Fill ``mask`` of the float (S, S, 3) ``image`` with a shaded colour, striped or solid."""
    rows, cols = np.nonzero(mask)
    size = image.shape[0]
    jitter = rng.uniform(-20, 20, 3)
    shading = 1 + 0.15 * np.linspace(-1, 1, size)[rows] * rng.uniform(-1, 1)
    if texture == "striped":
        period, angle, phase = rng.uniform(5, 8), rng.uniform(0, np.pi), rng.uniform(0, 1)
        position = (np.cos(angle) * cols + np.sin(angle) * rows) / period + phase
        shading = shading * np.where(position % 1 < 0.5, _STRIPE_DARKNESS, 1.0)
    image[rows, cols] = (np.asarray(PALETTE[colour]) + jitter) * shading[:, None]


def _draw_distractors(rng: np.random.Generator, config: DenseScenesConfig, image: np.ndarray) -> None:
    """Unannotated clutter: non-class shapes in any palette colour and texture."""
    size = config.image_size
    count = rng.integers(config.distractors_per_image[0], config.distractors_per_image[1] + 1)
    colours = sorted(PALETTE)
    for _ in range(count):
        side = int(rng.integers(config.distractor_size[0], config.distractor_size[1] + 1))
        reach = side / np.sqrt(2) + 1
        shape = DISTRACTOR_SHAPES[rng.integers(len(DISTRACTOR_SHAPES))]
        mask = object_mask(rng, shape, side, size, rng.uniform(reach, size - reach, 2))
        _paint(rng, image, mask, colours[rng.integers(len(colours))],
               TEXTURES[rng.integers(len(TEXTURES))])


def render_dense_image(rng: np.random.Generator, config: DenseScenesConfig,
                       class_ids: Sequence[int]) -> Tuple[np.ndarray, List[Dict]]:
    """Draw one image: distractors, then an object of each class in ``class_ids``, in order.

    A later object may cover earlier ones as long as each of them keeps ``min_visible`` of its
    pixels; an object that finds no such place in ``_PLACEMENT_TRIES`` tries is left out (the
    first object is always drawn).

    Returns:
        image: (S, S, 3) uint8 RGB.
        objects: dicts with ``category`` (class index), ``bbox`` [x, y, w, h] (px, XYWH_ABS) of
            the visible pixels and ``area`` (visible pixels).
    """
    size = config.image_size
    image = background(rng, size)
    _draw_distractors(rng, config, image)
    owner = np.full((size, size), -1, np.int64)  # index of the object visible at each pixel
    full_area: List[int] = []
    drawn: List[int] = []
    for class_id in class_ids:
        colour, texture, shape = config.class_triples[class_id]
        side = int(rng.integers(config.object_size[0], config.object_size[1] + 1))
        reach = side / np.sqrt(2) + 1
        visible = np.bincount(owner[owner >= 0], minlength=len(full_area))
        for _ in range(_PLACEMENT_TRIES):
            mask = object_mask(rng, shape, side, size, rng.uniform(reach, size - reach, 2))
            covered = owner[mask]
            lost = np.bincount(covered[covered >= 0], minlength=len(full_area))
            if np.all(visible - lost >= config.min_visible * np.asarray(full_area)):
                break
        else:
            continue
        owner[mask] = len(full_area)
        full_area.append(int(mask.sum()))
        drawn.append(int(class_id))
        _paint(rng, image, mask, colour, texture)
    objects = []
    for index, class_id in enumerate(drawn):
        visible_mask = owner == index
        box = mask_box(visible_mask)
        objects.append({"category": class_id, "bbox": [*box[:2], *(box[2:] - box[:2])],
                        "area": float(visible_mask.sum())})
    return camera(rng, image), objects


# --------------------------------------------------------------------------------------------
# writing and registration


def generate_dense_dataset(out_dir: str, config: DenseScenesConfig) -> None:
    """Write the dataset (images, split jsons, embeddings, ``dataset.json``) into ``out_dir``."""
    write_generated_dataset(out_dir, config, render_dense_image, dense_class_embeddings(config))


def register_zsd_dense(prefix: str = "zsd_dense", root: Optional[str] = None, **generator_options) -> List[str]:
    """Register ``<prefix>_{train,val,test_zsd,test_gzsd}`` of ``DenseScenesConfig(**generator_options)``,
    generated on first use under ``root`` (default ``$DETECTRON2_DATASETS/zsd_dense``)."""
    config = DenseScenesConfig(**generator_options)
    return register_generated_splits(prefix, root, config, dense_class_embeddings(config),
                                     [PALETTE[c] for c, _, _ in config.class_triples])


def held_out_world(split: int, num_held_out: int = 8, **generator_options) -> dict:
    """Generator options of validation world ``split`` of ``DenseScenesConfig(**generator_options)``
    with ``num_held_out`` held-out seen classes (:func:`.generated.held_out_world`)."""
    return generated_held_out_world(DenseScenesConfig, split, num_held_out, **generator_options)


HELD_OUT_SPLITS = 9  # validation worlds zsd_dense_heldout0 ... zsd_dense_heldout8
WORLD_SIZES = (8, 4)  # held-out classes per validation world: zsd_dense_heldout<k> (8), zsd_dense_heldout<k>_h4 (4)
TINY_OPTIONS = dict(image_size=96, objects_per_image=(3, 6), object_size=(14, 30), distractor_size=(8, 20),
                    num_train=40, num_val=10, num_test=20)
register_zsd_dense("zsd_dense")
register_zsd_dense("zsd_dense_tiny", **TINY_OPTIONS)
for _split in range(HELD_OUT_SPLITS):  # validation worlds (benchmarks/zsd_held_out_validation.py)
    for _size in WORLD_SIZES:
        _suffix = "" if _size == 8 else f"_h{_size}"
        register_zsd_dense(f"zsd_dense_heldout{_split}{_suffix}", **held_out_world(_split, _size))
        register_zsd_dense(f"zsd_dense_tiny_heldout{_split}{_suffix}", **held_out_world(_split, _size, **TINY_OPTIONS))
