"""The seen / unseen class split (:class:`ZeroShotSplit`) and the class embeddings of a
zero-shot detection dataset, read from its metadata.

Splits are data: a ZSD dataset's ``MetadataCatalog`` entry holds ``thing_classes`` (all classes in
one stable index space), ``seen_classes`` and ``unseen_classes`` (names), and its class embeddings
(``class_embeddings``: (K, a) nested list, or ``class_embeddings_file`` read with
:func:`zsdet.data.embeddings.load_class_embeddings`). Split files (COCO 65/15, 48/17, ...) are read
into the same type by :func:`zsdet.data.datasets.coco_zsd.load_class_split`.
"""
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
from detectron2.data import MetadataCatalog

from .embeddings import check_unique_names, load_class_embeddings, normalize_embeddings


@dataclass(frozen=True)
class ZeroShotSplit:
    """Class names and the contiguous ids of the seen and unseen classes.

    ``class_names[i]`` is class i of the detector (background is index ``len(class_names)``).
    """

    class_names: Tuple[str, ...]
    seen_ids: Tuple[int, ...]
    unseen_ids: Tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def seen(self) -> Tuple[str, ...]:
        """Names of the seen classes, in class order."""
        return tuple(self.class_names[i] for i in self.seen_ids)

    @property
    def unseen(self) -> Tuple[str, ...]:
        """Names of the unseen classes, in class order."""
        return tuple(self.class_names[i] for i in self.unseen_ids)

    @classmethod
    def from_names(cls, class_names: Sequence[str], unseen_classes: Sequence[str],
                   source: str = "the split") -> "ZeroShotSplit":
        """Build a split; every unseen name must be one of ``class_names`` (else ``KeyError``) and
        no name may appear twice in either list (``ValueError`` naming ``source`` and the name)."""
        check_unique_names(class_names, f"{source}: thing_classes")
        check_unique_names(unseen_classes, f"{source}: unseen_classes")
        index = {name: i for i, name in enumerate(class_names)}
        missing = [name for name in unseen_classes if name not in index]
        if missing:
            raise KeyError(f"unseen classes {missing} are not among the dataset's thing_classes")
        unseen = tuple(sorted(index[name] for name in unseen_classes))
        seen = tuple(i for i in range(len(class_names)) if i not in set(unseen))
        return cls(tuple(class_names), seen, unseen)

    @classmethod
    def from_dataset(cls, dataset_name: str) -> "ZeroShotSplit":
        """Read the split from ``MetadataCatalog.get(dataset_name)``; no ``unseen_classes`` → all seen."""
        meta = MetadataCatalog.get(dataset_name)
        if not hasattr(meta, "thing_classes"):
            raise KeyError(f"dataset {dataset_name!r} has no thing_classes in its metadata")
        return cls.from_names(meta.thing_classes, getattr(meta, "unseen_classes", []),
                              f"metadata of dataset {dataset_name!r}")


def class_embeddings_of(dataset_name: str, path: str = "", normalize: str = "l2") -> np.ndarray:
    """Class embeddings (K, a) float32 of a ZSD dataset, rows in ``thing_classes`` order.

    Args:
        dataset_name: a registered ZSD dataset.
        path: embedding file overriding the metadata's (any format of
            :func:`zsdet.data.embeddings.load_class_embeddings`); "" = use the metadata.
        normalize: "l2" (rows), "spectral" (SUZOD: whole matrix by its largest singular value)
            or "none".
    """
    meta = MetadataCatalog.get(dataset_name)
    names = meta.thing_classes
    if path or not hasattr(meta, "class_embeddings"):
        path = path or getattr(meta, "class_embeddings_file", "")
        if not path:
            raise KeyError(f"dataset {dataset_name!r} has neither class_embeddings nor "
                           "class_embeddings_file in its metadata (or set ZSD.EMBEDDINGS_FILE)")
        return load_class_embeddings(path, names, normalize=normalize)
    emb = np.asarray(meta.class_embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(names):
        raise ValueError(f"class embeddings of {dataset_name!r} have shape {emb.shape}, "
                         f"expected ({len(names)}, a)")
    return normalize_embeddings(emb, normalize, row_names=names, source=f"metadata of {dataset_name}")


def class_embeddings_source(cfg) -> str:
    """Where :func:`class_embeddings_from_config` reads the embeddings: ``ZSD.EMBEDDINGS_FILE``, else
    the training set's ``class_embeddings_file``, else ``"metadata of dataset <name>"``."""
    meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    path = cfg.ZSD.EMBEDDINGS_FILE or (getattr(meta, "class_embeddings_file", "")
                                       if not hasattr(meta, "class_embeddings") else "")
    return path or f"metadata of dataset {cfg.DATASETS.TRAIN[0]!r}"


def class_embeddings_from_config(cfg) -> np.ndarray:
    """Embeddings of ``cfg.DATASETS.TRAIN[0]`` with ``cfg.ZSD.EMBEDDINGS_FILE`` / ``EMBEDDINGS_NORMALIZE``."""
    if not cfg.DATASETS.TRAIN:
        raise KeyError("DATASETS.TRAIN is empty: class embeddings are read from its first dataset")
    return class_embeddings_of(cfg.DATASETS.TRAIN[0], cfg.ZSD.EMBEDDINGS_FILE, cfg.ZSD.EMBEDDINGS_NORMALIZE)
