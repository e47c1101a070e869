"""Generated ZSD datasets in COCO format: the options base, the writer and the registration shared
by the built-in sets (:mod:`.shapes`, :mod:`.dense_scenes`).

A generated set is a pure function of its options (a frozen dataclass deriving from
:class:`GeneratedSetConfig`; every field is part of the folder hash :meth:`~GeneratedSetConfig.digest`).
Each class is a tuple of attribute values (e.g. ``("green", "triangle")``) named by joining them
with spaces; some tuples are unseen. Splits, in one class index space (``thing_classes``):

* ``<prefix>_train``, ``<prefix>_val``: seen objects only, disjoint images;
* ``<prefix>_test_zsd``: images with >= 1 unseen object (plus seen ones); GT = unseen boxes;
* ``<prefix>_test_gzsd``: the same images; GT = all boxes.

The set is generated on the first ``DatasetCatalog.get`` (image ``i`` of image set ``s`` drawn
with ``np.random.default_rng([seed, s, i])``) into ``<root>/<prefix>_<digest>/`` (default root
``$DETECTRON2_DATASETS/<NAME>``), written to a temporary sibling folder renamed into place, then
read with detectron2's ``load_coco_json``.
Layout::

    images/{train,val,test}/000000.png
    annotations/{train,val,test_zsd,test_gzsd}.json
    class_embeddings.tsv        (class name, tab, floats; rows in thing_classes order)
    dataset.json                (the options and generator version; written last = complete)
"""
import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from tqdm import tqdm

from ...utils.io import write_json
from ..embeddings import write_embedding_table

__all__ = ["GeneratedSetConfig", "held_out_world", "image_classes", "write_generated_dataset", "ensure_generated",
           "register_generated_splits", "SPLITS"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test_zsd", "test_gzsd")
_IMAGE_SETS = {"train": 0, "val": 1, "test": 2}  # image folder -> RNG stream / image-id block
_ZSD_MODES = {"train": "seen", "val": "seen", "test_zsd": "zsd", "test_gzsd": "gzsd"}

# render(rng, config, class_ids) -> (pixels (S, S, 3) uint8 RGB, objects): an object of each class
# drawn in order (those without room left out); each object a dict with "category" (class index),
# "bbox" [x, y, w, h] (px) and "area" (object pixels)
RenderFn = Callable[[np.random.Generator, "GeneratedSetConfig", Sequence[int]], Tuple[np.ndarray, List[Dict]]]


class GeneratedSetConfig:
    """Base of the generator options of a generated set (module docstring).

    A subclass is a frozen dataclass with the fields ``unseen`` (the unseen attribute tuples),
    optionally ``absent`` (unseen attribute tuples drawn in no image: a validation world whose
    held-out seen classes play the unseen ones while the real unseen classes stay out of sight),
    ``objects_per_image`` (inclusive range), ``image_size``, ``num_train`` / ``num_val`` /
    ``num_test`` and ``seed``, and sets ``NAME`` (progress label, default folder),
    ``DESCRIPTION``, ``ATTRIBUTE_FIELDS`` (the fields holding the values of each attribute, in
    tuple order), ``generator_version`` (bumped when the output changes for the same options) and
    :meth:`generate`. List values (e.g. from YAML) are stored as tuples.
    """

    NAME: ClassVar[str] = ""
    DESCRIPTION: ClassVar[str] = ""
    ATTRIBUTE_FIELDS: ClassVar[Tuple[str, ...]] = ()
    generator_version: ClassVar[int] = 1

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, (list, tuple)):  # hashable, and one type however it was given
                object.__setattr__(self, field.name, tuple(tuple(v) if isinstance(v, (list, tuple)) else v
                                                           for v in value))
        self._validate()

    def _validate(self) -> None:
        """Raise when the options are inconsistent; subclasses check their own fields first."""
        bad = [t for t in self.unseen if t not in self.class_attributes]
        if bad or len(set(self.unseen)) != len(self.unseen):
            kind = ", ".join(self.ATTRIBUTE_FIELDS)
            raise ValueError(f"unseen classes {bad or self.unseen} must be distinct ({kind}) tuples of the "
                             "configured attribute values")
        if not self.unseen or len(self.unseen) == len(self.class_attributes):
            raise ValueError("need at least one seen and one unseen class")
        seen = [self.class_attributes[i] for i in self.seen_ids]
        orphans = sorted({v for t in self.unseen for v in t} - {v for t in seen for v in t})
        if orphans:
            raise ValueError(f"unseen attributes {orphans} occur in no seen class, so they cannot be learnt "
                             "from seen data")
        absent = getattr(self, "absent", ())
        if not set(absent) <= set(self.unseen) or len(set(absent)) == len(set(self.unseen)):
            raise ValueError(f"absent classes {absent} must be unseen classes, and at least one unseen "
                             "class must be drawn")
        if not 1 <= self.objects_per_image[0] <= self.objects_per_image[1]:
            raise ValueError(f"objects_per_image {self.objects_per_image} must be 1 <= min <= max")
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise ValueError("num_train, num_val and num_test must be >= 1")

    @property
    def class_attributes(self) -> List[Tuple[str, ...]]:
        """The attribute tuple of each class, in class order (the product of the attribute values)."""
        return list(itertools.product(*(getattr(self, name) for name in self.ATTRIBUTE_FIELDS)))

    @property
    def class_names(self) -> List[str]:
        return [" ".join(t) for t in self.class_attributes]

    @property
    def unseen_ids(self) -> List[int]:
        return sorted(self.class_attributes.index(t) for t in self.unseen)

    @property
    def seen_ids(self) -> List[int]:
        unseen = set(self.unseen_ids)
        return [i for i in range(len(self.class_attributes)) if i not in unseen]

    @property
    def absent_ids(self) -> List[int]:
        """Unseen classes drawn in no image (``absent``; none unless the subclass has the field)."""
        return sorted(self.class_attributes.index(t) for t in getattr(self, "absent", ()))

    @property
    def drawn_unseen_ids(self) -> List[int]:
        """Unseen classes that test images may show: all but the ``absent`` ones."""
        absent = set(self.absent_ids)
        return [i for i in self.unseen_ids if i not in absent]

    def digest(self) -> str:
        """8 hex digits identifying the generated content (options + generator version)."""
        options = dataclasses.asdict(self)
        if not options.get("absent", True):  # added later: unset, it keeps the folder names of before
            del options["absent"]
        blob = json.dumps([self.generator_version, options], sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:8]

    def generate(self, out_dir: str) -> None:
        """Write the set into the empty folder ``out_dir`` (:func:`write_generated_dataset`)."""
        raise NotImplementedError


_HELD_OUT_DRAWS = 1000  # draws of held_out_world before it gives up


def held_out_world(config_type, split: int, num_held_out: int, **generator_options) -> dict:
    """Generator options of a validation world of ``config_type(**generator_options)`` (a
    :class:`GeneratedSetConfig` with an ``absent`` field): ``num_held_out`` of its seen classes,
    drawn by ``split``, become unseen, and its unseen classes are ``absent`` (in no image). Its
    detector never sees the held-out classes, as the real detector never sees the unseen ones, while
    no real unseen object is drawn; its ``test_*`` images are validation images of the held-out
    classes. Same classes and embeddings as the base set.

    The draw is the first of a ``np.random.default_rng([split, 7717])`` stream whose held-out
    attribute values all remain in a training class (learnable from seen data, as the real unseen
    ones must be). Raises ``ValueError`` when no such draw turns up."""
    base = config_type(**generator_options)
    seen, attributes = np.asarray(base.seen_ids), base.class_attributes
    rng = np.random.default_rng([split, 7717])
    for _ in range(_HELD_OUT_DRAWS):
        held_out = np.sort(rng.choice(seen, num_held_out, replace=False))
        kept = {v for i in np.setdiff1d(seen, held_out) for v in attributes[i]}
        if all(v in kept for i in held_out for v in attributes[i]):
            return dict(generator_options, unseen=tuple(base.unseen) + tuple(attributes[i] for i in held_out),
                        absent=tuple(base.unseen))
    raise ValueError(f"{config_type.__name__}: no {num_held_out} of the {len(seen)} seen classes can be held out "
                     f"with each of their attribute values left in a training class ({_HELD_OUT_DRAWS} draws)")


def image_classes(rng: np.random.Generator, config: GeneratedSetConfig, image_set: str) -> np.ndarray:
    """Class ids of one image: seen-only for train/val; test: one unseen first, then any class
    (with ``absent`` classes: one drawn unseen class first, then seen or drawn unseen ones)."""
    count = rng.integers(config.objects_per_image[0], config.objects_per_image[1] + 1)
    if image_set != "test":
        return rng.choice(config.seen_ids, count)
    if not config.absent_ids:
        others = rng.integers(0, len(config.class_names), count - 1)
        return np.concatenate([rng.choice(config.unseen_ids, 1), others])
    drawn_unseen = config.drawn_unseen_ids
    first = rng.choice(drawn_unseen, 1)
    return np.concatenate([first, rng.choice(np.asarray(config.seen_ids + drawn_unseen), count - 1)])


def write_generated_dataset(out_dir: str, config: GeneratedSetConfig, render: RenderFn,
                            embeddings: np.ndarray) -> None:
    """Write a generated set (images, split jsons, embeddings, ``dataset.json``) into ``out_dir``.

    Args:
        render: draws one image (``RenderFn``) of the classes of :func:`image_classes`, both with
            the image's generator.
        embeddings: (C, a) class embeddings in ``class_names`` order.
    """
    categories = [{"id": i + 1, "name": class_name, "supercategory": "shape"}
                  for i, class_name in enumerate(config.class_names)]
    unseen = set(config.unseen_ids)
    annotations: Dict[str, List[Dict]] = {split: [] for split in SPLITS}
    images: Dict[str, List[Dict]] = {split: [] for split in SPLITS}
    counts = {"train": config.num_train, "val": config.num_val, "test": config.num_test}
    bar = tqdm(total=sum(counts.values()), desc=config.NAME, unit="img", disable=None)
    for image_set, count in counts.items():
        os.makedirs(os.path.join(out_dir, "images", image_set))
        splits = ("test_zsd", "test_gzsd") if image_set == "test" else (image_set,)
        for index in range(count):
            rng = np.random.default_rng([config.seed, _IMAGE_SETS[image_set], index])
            pixels, objects = render(rng, config, image_classes(rng, config, image_set))
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
        info = {"description": f"{config.DESCRIPTION}, split {split}", "version": config.digest()}
        write_json(os.path.join(out_dir, "annotations", f"{split}.json"),
                   {"info": info, "images": images[split], "annotations": annotations[split],
                    "categories": categories}, indent=None)
    write_embedding_table(os.path.join(out_dir, "class_embeddings.tsv"), config.class_names, embeddings)
    write_json(os.path.join(out_dir, "dataset.json"),  # last: marks a complete set
               {"generator_version": config.generator_version, **dataclasses.asdict(config)}, indent=None)


def ensure_generated(dataset_dir: str, config: GeneratedSetConfig, generate=None) -> None:
    """Generate the set into ``dataset_dir`` with ``generate(folder, config)`` (default
    ``config.generate(folder)``) unless it is complete there already.

    Generation writes to a temporary sibling folder that is renamed into place, so a killed run
    leaves no half-written set; when several processes race, the first rename wins.
    """
    if os.path.isfile(os.path.join(dataset_dir, "dataset.json")):
        return
    parent = os.path.dirname(dataset_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dataset_dir)}.tmp-", dir=parent)
    start = time.perf_counter()
    logger.info(f"Generating the synthetic dataset into {dataset_dir} ...")
    try:
        if generate is None:
            config.generate(tmp)
        else:
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


def _load_split(dataset_dir: str, config: GeneratedSetConfig, split: str, name: str) -> List[Dict]:
    ensure_generated(dataset_dir, config)
    return load_coco_json(os.path.join(dataset_dir, "annotations", f"{split}.json"),
                          os.path.join(dataset_dir, "images"), name)


def register_generated_splits(prefix: str, root: Optional[str], config: GeneratedSetConfig,
                              embeddings: np.ndarray, thing_colors: Sequence) -> List[str]:
    """Register ``<prefix>_{train,val,test_zsd,test_gzsd}`` of the set of ``config``, generated on
    first use into ``<root>/<prefix>_<digest>`` (``root`` made absolute now, default
    ``$DETECTRON2_DATASETS/<config.NAME>``); nothing is generated at registration.

    Args:
        embeddings: (C, a) class embeddings (metadata ``class_embeddings``).
        thing_colors: an RGB colour per class (metadata ``thing_colors``).

    Returns:
        The four dataset names. Registering the same prefix again for the same options is a no-op;
        for other options it is a ``ValueError``.
    """
    root = root or os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), config.NAME)
    dataset_dir = os.path.abspath(os.path.join(root, f"{prefix}_{config.digest()}"))
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
        DatasetCatalog.register(name, functools.partial(_load_split, dataset_dir, config, split, name))
        MetadataCatalog.get(name).set(
            json_file=os.path.join(dataset_dir, "annotations", f"{split}.json"),
            zsd_mode=_ZSD_MODES[split], **common,
        )
    return names
