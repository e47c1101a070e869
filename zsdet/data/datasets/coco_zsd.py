"""COCO 2014 zero-shot detection splits (65 seen / 15 unseen by default), built and registered.

The split rules follow the SUZOD protocol (Hayat et al., ACCV 2020, and the filters of its code):

* ``train`` (train2014, seen group, *exclusive*): an image is dropped when any of its annotations,
  crowd ones included, belongs to a class outside the seen group; then images without any seen
  annotation or with ``min(width, height) < min_size`` (32) are dropped. GT = seen annotations.
* ``val``: a deterministic ``val_fraction`` (2 %) of those training images, drawn with
  ``np.random.default_rng(seed)`` from the sorted image ids and **removed from train**, for model
  selection on seen classes (SUZOD has no such split; its training set is train + val here).
* ``test_zsd`` (val2014, unseen group, *inclusive*): images with at least one annotation of an
  unseen class -- any annotation counts, crowd included, as mmdet's filter inspects all of an
  image's annotation ids; no size filter. GT = unseen annotations.
* ``test_gzsd``: the same images, GT = annotations of seen and unseen classes.
* ``unseen_real`` (val2014, unseen group, exclusive): images whose annotations are all unseen,
  min side >= ``min_size``; GT = unseen annotations (SUZOD's real unseen features).

In every split, annotations with ``w < 1``, ``h < 1`` or ``area <= 0`` are left out of the GT (mmdet
skips them) but still count for the image rules above; ``iscrowd=1`` annotations of the group stay
(detectron2 treats them as ignore regions); segmentation is dropped unless asked for (zsdet is
box-only). The ``categories`` list of every split json holds every seen and unseen class (all 80
for 65/15) in category-id order, one stable index space: contiguous ids agree across splits and
with ``thing_classes``. Classes in neither group (e.g. the 15 leftover classes of a 48/17 split)
are dropped from that list and from GT, and their images are excluded from the exclusive splits
(an image with such an object can still be a test image).

Class splits are data: :func:`load_class_split` reads a TSV with ``name`` and ``split`` columns
(``seen`` / ``unseen`` / ``none``), a JSON ``{"seen": [...], "unseen": [...]}``, or a named split
shipped with the repository (``NAMED_SPLITS``: ``coco65_15``, ``coco48_17``, the tables in
``datasets/coco_zsd/``; :func:`class_split_file` gives their paths). The default is the 65/15
split (``COCO_65_15_UNSEEN``, seen = the other 65; equal to the ``coco65_15`` table, read without
opening a file so that registration at import reads nothing). ``DEFAULT_EMBEDDINGS`` is SUZOD's
fastText table, shipped as well; ``TEST_IMAGE_IDS_65_15`` the 10,098 val2014 test-image ids.

Files (``root`` = ``$DETECTRON2_DATASETS``, default ``datasets``)::

    <root>/coco/annotations/instances_{train,val}2014.json    input (official COCO 2014)
    <root>/coco/{train2014,val2014}/                           images
    <root>/coco/zsd/<tag>/{train,val,test_zsd,test_gzsd,unseen_real}.json
    <root>/coco/zsd/<tag>/class_embeddings.tsv                 default class_embeddings_file
    <root>/coco/zsd/<tag>/manifest.json                        options, inputs and counts
"""
import csv
import functools
import os
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from ...utils.io import read_json
from ..embeddings import check_unique_names
from ..shipped import resolve_data_path
from ..zsd_split import ZeroShotSplit

COCO_THING_CATEGORIES = [c for c in COCO_CATEGORIES if c["isthing"]]
COCO_THING_CLASSES = [c["name"] for c in COCO_THING_CATEGORIES]
COCO_65_15_UNSEEN = (
    "airplane", "train", "parking meter", "cat", "bear", "suitcase", "frisbee", "snowboard",
    "fork", "sandwich", "hot dog", "toilet", "mouse", "toaster", "hair drier",
)
SPLITS = ("train", "val", "test_zsd", "test_gzsd", "unseen_real")
ZSD_MODES = {"train": "seen", "val": "seen", "test_zsd": "zsd", "test_gzsd": "gzsd",
             "unseen_real": "zsd"}
IMAGE_DIRS = {"train": "train2014", "val": "train2014", "test_zsd": "val2014",
              "test_gzsd": "val2014", "unseen_real": "val2014"}
PREPARE_COMMAND = "python datasets/prepare_coco_zsd.py"
NAMED_SPLITS = {"coco65_15": "zsdet://coco_zsd/split_65_15.tsv",
                "coco48_17": "zsdet://coco_zsd/split_48_17.tsv"}
DEFAULT_EMBEDDINGS = "zsdet://coco_zsd/class_embeddings/fasttext_suzod.tsv"
TEST_IMAGE_IDS_65_15 = "zsdet://coco_zsd/test_image_ids_val2014_65_15.txt"
SPLIT_VALUES = ("seen", "unseen", "none")


def load_class_split(spec: Union[None, str, os.PathLike, Mapping[str, Sequence[str]]] = None,
                     class_names: Sequence[str] = COCO_THING_CLASSES) -> ZeroShotSplit:
    """Read a seen/unseen split and check it against ``class_names``.

    Args:
        spec: ``None`` (COCO 65/15), a name of ``NAMED_SPLITS`` (``"coco48_17"``), a ``.tsv`` with
            ``name`` and ``split`` (seen / unseen / none) columns, a ``.json``
            ``{"seen": [...], "unseen": [...]}``, or such a mapping. Without a seen list, seen =
            every class that is not unseen.
        class_names: all classes of the dataset; the result holds those that are seen or unseen,
            in this order.
    """
    source = "the default 65/15 split" if spec is None else str(spec)
    if spec is None:
        spec = {"unseen": COCO_65_15_UNSEEN}
    elif isinstance(spec, (str, os.PathLike)):
        spec = _read_split_file(class_split_file(spec))
    for group in ("seen", "unseen"):
        check_unique_names(spec.get(group) or (), f"{source} ({group} classes)")
    unseen = set(spec.get("unseen", ()))
    seen = set(spec["seen"]) if spec.get("seen") is not None else set(class_names) - unseen
    unknown = sorted((seen | unseen) - set(class_names))
    if unknown:
        raise KeyError(f"{source}: classes {unknown} are not among the dataset's classes")
    if seen & unseen:
        raise ValueError(f"{source}: classes {sorted(seen & unseen)} are both seen and unseen")
    if not seen or not unseen:
        raise ValueError(f"{source}: the seen and the unseen lists must both be non-empty")
    return ZeroShotSplit.from_names([n for n in class_names if n in seen | unseen],
                                    [n for n in class_names if n in unseen], source)


def class_split_file(spec: Union[str, os.PathLike]) -> str:
    """Path of a class-split file: a name of ``NAMED_SPLITS`` (``"coco65_15"``, ``"coco48_17"``)
    gives the table shipped in ``datasets/coco_zsd/``; anything else is taken as a file path and
    returned unchanged (as a string)."""
    spec = os.fspath(spec)
    return resolve_data_path(NAMED_SPLITS.get(spec, spec))


def _read_split_file(path: str) -> Dict[str, List[str]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class-split file {path} does not exist")
    if path.endswith(".json"):
        spec = read_json(path, "class-split")
        if not isinstance(spec, dict) or "unseen" not in spec:
            raise ValueError(f'{path}: expected {{"seen": [...], "unseen": [...]}}')
        return spec
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or not {"name", "split"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a TSV with a header holding 'name' and 'split' columns")
    check_unique_names([r["name"] for r in rows], path)
    bad = sorted({r["split"] for r in rows} - set(SPLIT_VALUES))
    if bad:
        raise ValueError(f"{path}: unknown split values {bad} (use {' / '.join(SPLIT_VALUES)})")
    return {group: [r["name"] for r in rows if r["split"] == group] for group in ("seen", "unseen")}


# --------------------------------------------------------------------------------------------
# split construction (vectorised over annotations and images)


class _CocoArrays:
    """Per-annotation and per-image columns of a COCO instances dict, as numpy arrays."""

    def __init__(self, coco: Mapping):
        anns, images = coco["annotations"], coco["images"]
        self.coco = coco
        self.ann_image = np.array([a["image_id"] for a in anns], dtype=np.int64)
        self.ann_category = np.array([a["category_id"] for a in anns], dtype=np.int64)
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        area = np.array([a.get("area", 1.0) for a in anns], dtype=np.float64)
        self.ann_valid = (boxes[:, 2] >= 1) & (boxes[:, 3] >= 1) & (area > 0)
        self.image_id = np.array([im["id"] for im in images], dtype=np.int64)
        self.min_side = np.array([min(im["width"], im["height"]) for im in images], dtype=np.int64)
        names = {c["id"]: c["name"] for c in coco["categories"]}
        unknown = sorted(set(np.unique(self.ann_category).tolist()) - set(names))
        if unknown:
            raise KeyError(f"annotations use category ids {unknown} missing from 'categories'")
        self.category_names = names

    def category_ids(self, names: Sequence[str]) -> np.ndarray:
        wanted = set(names)
        return np.array(sorted(i for i, n in self.category_names.items() if n in wanted),
                        dtype=np.int64)

    def images_with(self, ann_mask: np.ndarray) -> np.ndarray:
        """(n_images,) bool: the image has at least one annotation selected by ``ann_mask``."""
        return np.isin(self.image_id, self.ann_image[ann_mask])

    def exclusive(self, group: np.ndarray, min_size: int) -> np.ndarray:
        """Image ids whose annotations all belong to ``group`` (>= 1 of them), min side ok."""
        in_group = np.isin(self.ann_category, group)
        keep = self.images_with(in_group) & ~self.images_with(~in_group)
        return self.image_id[keep & (self.min_side >= min_size)]

    def inclusive(self, group: np.ndarray) -> np.ndarray:
        """Image ids with at least one annotation of ``group``."""
        return self.image_id[self.images_with(np.isin(self.ann_category, group))]

    def subset(self, image_ids: np.ndarray, group: np.ndarray, categories: np.ndarray,
               description: str, keep_segmentation: bool) -> Dict:
        """A COCO dict with ``image_ids`` (in id order), their valid annotations of ``group``
        and the category entries of the ids ``categories``."""
        image_rows = np.flatnonzero(np.isin(self.image_id, image_ids))
        ann_rows = np.flatnonzero(np.isin(self.ann_image, image_ids)
                                  & np.isin(self.ann_category, group) & self.ann_valid)
        images = self.coco["images"]
        annotations = self.coco["annotations"]
        drop = () if keep_segmentation else ("segmentation",)
        return {
            "info": {"description": description},
            "licenses": self.coco.get("licenses", []),
            "images": [images[i] for i in image_rows[np.argsort(self.image_id[image_rows])]],
            "annotations": [{k: v for k, v in annotations[i].items() if k not in drop}
                            for i in ann_rows],
            "categories": sorted((c for c in self.coco["categories"] if c["id"] in categories),
                                 key=lambda c: c["id"]),
        }


def make_zsd_splits(train_coco: Mapping, test_coco: Mapping, class_split: ZeroShotSplit, *,
                    val_fraction: float = 0.02, seed: int = 0, min_size: int = 32,
                    keep_segmentation: bool = False) -> Dict[str, Dict]:
    """Build the ZSD split dicts (module docstring) from COCO instances dicts.

    Args:
        train_coco: e.g. ``instances_train2014.json`` loaded; gives ``train`` and ``val``.
        test_coco: e.g. ``instances_val2014.json`` loaded; gives the test splits.
        class_split: seen / unseen class names (as in the jsons' ``categories``).
        val_fraction: share of the seen training images held out as ``val``.
        seed: seed of the held-out draw.
        min_size: exclusive splits drop images whose shorter side is below this (px).
        keep_segmentation: keep the annotations' ``segmentation`` field.

    Returns:
        ``{split: coco dict}`` for every name in ``SPLITS``.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train, test = _CocoArrays(train_coco), _CocoArrays(test_coco)
    for arrays, which in ((train, "training"), (test, "test")):
        missing = sorted(set(class_split.seen + class_split.unseen)
                         - set(arrays.category_names.values()))
        if missing:
            raise KeyError(f"classes {missing} are missing from the {which} json's categories")
    train_all = train.category_ids(class_split.seen + class_split.unseen)
    test_all = test.category_ids(class_split.seen + class_split.unseen)
    train_cats = [(i, train.category_names[i]) for i in train_all.tolist()]
    test_cats = [(i, test.category_names[i]) for i in test_all.tolist()]
    if train_cats != test_cats:  # one index space for all splits
        raise ValueError("the training and test jsons give the split's classes different "
                         f"category ids: {train_cats} vs {test_cats}")
    seen, t_unseen = train.category_ids(class_split.seen), test.category_ids(class_split.unseen)

    # sorted, so that the held-out draw does not depend on the json's image order
    seen_images = np.sort(train.exclusive(seen, min_size))
    num_val = int(round(val_fraction * len(seen_images)))
    rng = np.random.default_rng(seed)
    val_images = rng.choice(seen_images, size=num_val, replace=False)
    train_images = np.setdiff1d(seen_images, val_images)
    test_images = test.inclusive(t_unseen)

    def describe(split):
        return (f"zsdet ZSD split '{split}': {len(class_split.seen)} seen / "
                f"{len(class_split.unseen)} unseen classes")

    parts = {
        "train": (train, train_images, seen),
        "val": (train, val_images, seen),
        "test_zsd": (test, test_images, t_unseen),
        "test_gzsd": (test, test_images, test_all),
        "unseen_real": (test, test.exclusive(t_unseen, min_size), t_unseen),
    }
    return {split: arrays.subset(images, group, train_all, describe(split), keep_segmentation)
            for split, (arrays, images, group) in parts.items()}


# --------------------------------------------------------------------------------------------
# paths and registration


def default_root() -> str:
    """``$DETECTRON2_DATASETS`` (default ``datasets``)."""
    return os.getenv("DETECTRON2_DATASETS", "datasets")


def split_dir(root: str, tag: str) -> str:
    """Folder of the prepared split jsons of split ``tag`` (e.g. ``"65_15"``)."""
    return os.path.join(root, "coco", "zsd", tag)


def split_json(root: str, tag: str, split: str) -> str:
    return os.path.join(split_dir(root, tag), f"{split}.json")


def _load_prepared(json_file: str, image_root: str, name: str, tag: str) -> List[Dict]:
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"{json_file} does not exist: prepare the '{tag}' splits with `{PREPARE_COMMAND} "
            f"--tag {tag}` (add --split-file for a non-default split); it reads "
            "$DETECTRON2_DATASETS/coco/annotations/instances_{train,val}2014.json"
        )
    return load_coco_json(json_file, image_root, name)


def register_coco_zsd(tag: str = "65_15", root: Optional[str] = None,
                      class_split: Union[None, str, Mapping[str, Sequence[str]]] = None,
                      embeddings_file: Optional[str] = None,
                      thing_classes: Sequence[str] = COCO_THING_CLASSES,
                      prefix: Optional[str] = None) -> List[str]:
    """Register ``<prefix>_<split>`` for every split in ``SPLITS`` (lazily).

    Args:
        tag: split tag, also the folder ``coco/zsd/<tag>`` of the prepared jsons.
        root: ``$DETECTRON2_DATASETS`` by default (made absolute at registration).
        class_split: see :func:`load_class_split` (``None`` = 65/15).
        embeddings_file: class-embedding file for the metadata (``zsdet://`` paths allowed;
            default ``<root>/coco/zsd/<tag>/class_embeddings.tsv``, written by the prepare script).
        thing_classes: the class names of the source jsons in category-id order (COCO's 80 by
            default); the registered ``thing_classes`` are those that are seen or unseen.
        prefix: dataset-name prefix, default ``coco_2014_zsd_<tag>``; another prefix registers
            the same prepared splits again, e.g. with another embedding file.

    Returns:
        The registered names. Registering a prefix again with the same arguments is a no-op;
        with other files or classes it is a ``ValueError``.
    """
    root = os.path.abspath(root or default_root())
    groups = load_class_split(class_split, thing_classes)
    embeddings_file = os.path.abspath(resolve_data_path(
        embeddings_file or os.path.join(split_dir(root, tag), "class_embeddings.tsv")))
    names = [f"{prefix or 'coco_2014_zsd_' + tag}_{split}" for split in SPLITS]
    in_split = set(groups.seen + groups.unseen)
    thing_classes = [name for name in thing_classes if name in in_split]
    common = dict(thing_classes=thing_classes, seen_classes=list(groups.seen),
                  unseen_classes=list(groups.unseen), class_embeddings_file=embeddings_file,
                  evaluator_type="zsd")
    if thing_classes == COCO_THING_CLASSES:
        common["thing_dataset_id_to_contiguous_id"] = {
            c["id"]: i for i, c in enumerate(COCO_THING_CATEGORIES)}
    if names[0] in DatasetCatalog:
        existing = MetadataCatalog.get(names[0])
        wanted = dict(common, json_file=split_json(root, tag, SPLITS[0]))
        changed = sorted(k for k, v in wanted.items() if existing.get(k) != v)
        if changed:
            raise ValueError(f"dataset {names[0]!r} is already registered with other {changed}; "
                             "use another prefix")
        return names
    for split, name in zip(SPLITS, names):
        json_file = split_json(root, tag, split)
        image_root = os.path.join(root, "coco", IMAGE_DIRS[split])
        DatasetCatalog.register(name, functools.partial(_load_prepared, json_file, image_root,
                                                        name, tag))
        MetadataCatalog.get(name).set(zsd_mode=ZSD_MODES[split], json_file=json_file,
                                      image_root=image_root, **common)
    return names


register_coco_zsd("65_15")
