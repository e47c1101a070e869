"""Datasets re-indexed to another class list, and the class-list files that declare them.

A detector's box classifier has one column per class of its training set's ``thing_classes``.
To use a detector whose class list differs from a registered dataset's (classes withheld before
training, or added afterwards by ``tools/add_classes.py``), the dataset is registered again under
a new name with its annotations re-indexed *by class name* to the detector's list: annotations of
classes outside the list are left out, classes of the list that the source does not know simply
have no GT.

A **class-list file** (json) declares such datasets, so that a config can name them::

    {"thing_classes": [...], "seen_classes": [...], "unseen_classes": [...],
     "class_embeddings": [[...], ...] or null,     # rows of thing_classes (optional)
     "datasets": {"<new name>": "<registered source name>", ...}}

``ZSD.CLASS_LIST`` in a config points to one; :func:`zsdet.config.get_zsdet_cfg` registers its
datasets (lazily: nothing is read until a dataset is used), so ``tools/train_net.py`` and
``tools/demo.py`` accept such configs unchanged.
"""
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from ...utils.io import read_json, write_json
from ..embeddings import check_unique_names

__all__ = ["register_reindexed", "register_class_list", "read_class_list", "write_class_list",
           "root_source"]

# metadata that describes the source's own class list (re-derived by name, or dropped)
_CLASS_KEYS = ("thing_classes", "seen_classes", "unseen_classes", "class_embeddings",
               "thing_colors", "thing_dataset_id_to_contiguous_id", "json_file", "name")
SOURCE_KEY = "reindexed_from"


def _reindex_records(source: str, thing_classes: Sequence[str]) -> List[Dict]:
    """The source's records with ``category_id`` mapped by name (other classes' boxes left out)."""
    old = MetadataCatalog.get(source).thing_classes
    index = {name: i for i, name in enumerate(thing_classes)}
    new_id = np.array([index.get(name, -1) for name in old], dtype=np.int64)
    out = []
    for rec in DatasetCatalog.get(source):  # per image: the dict copy is unavoidable
        anns = [dict(a, category_id=int(new_id[a["category_id"]])) for a in rec.get("annotations", [])
                if new_id[a["category_id"]] >= 0]
        out.append(dict(rec, annotations=anns))
    return out


def register_reindexed(name: str, source: str, thing_classes: Sequence[str],
                       seen_classes: Sequence[str], unseen_classes: Sequence[str],
                       class_embeddings: Optional[Sequence[Sequence[float]]] = None) -> None:
    """Register ``name``: dataset ``source`` re-indexed to ``thing_classes`` (module docstring).

    The metadata is the source's (``zsd_mode``, ``image_root``, ``evaluator_type``,
    ``class_embeddings_file``, ...) with the new class lists, ``thing_colors`` and
    ``class_embeddings`` taken over by name where the source has them (or ``class_embeddings``
    given: (K, a) rows of ``thing_classes``), and ``reindexed_from = source``. Registering the same
    definition again is a no-op; another definition under a registered name is a ``ValueError``.
    """
    thing_classes, seen, unseen = list(thing_classes), list(seen_classes), list(unseen_classes)
    check_unique_names(thing_classes, f"thing_classes of {name!r}")
    if sorted(seen + unseen) != sorted(thing_classes):
        raise ValueError(f"{name!r}: seen_classes + unseen_classes must be exactly thing_classes")
    if source not in DatasetCatalog:
        raise KeyError(f"{name!r}: source dataset {source!r} is not registered")
    src = MetadataCatalog.get(source)
    if not hasattr(src, "thing_classes"):
        raise KeyError(f"{name!r}: source dataset {source!r} has no thing_classes in its metadata")
    meta = {k: v for k, v in src.as_dict().items() if k not in _CLASS_KEYS}
    meta.update(thing_classes=thing_classes, seen_classes=seen, unseen_classes=unseen)
    meta[SOURCE_KEY] = source
    by_name = {n: i for i, n in enumerate(src.thing_classes)}
    if class_embeddings is not None:
        if len(class_embeddings) != len(thing_classes):
            raise ValueError(f"{name!r}: {len(class_embeddings)} class-embedding rows for "
                             f"{len(thing_classes)} classes")
        meta["class_embeddings"] = [list(map(float, row)) for row in class_embeddings]
    elif hasattr(src, "class_embeddings") and all(n in by_name for n in thing_classes):
        meta["class_embeddings"] = [src.class_embeddings[by_name[n]] for n in thing_classes]
    if hasattr(src, "thing_colors"):
        meta["thing_colors"] = [src.thing_colors[by_name[n]] if n in by_name else (255, 0, 255)
                                for n in thing_classes]
    if name in DatasetCatalog:
        if MetadataCatalog.get(name).as_dict() != {"name": name, **meta}:
            raise ValueError(f"dataset {name!r} is already registered with another definition")
        return
    DatasetCatalog.register(name, lambda: _reindex_records(source, thing_classes))
    MetadataCatalog.get(name).set(**meta)


def root_source(name: str) -> str:
    """The registered dataset that ``name`` was (possibly repeatedly) re-indexed from."""
    while SOURCE_KEY in MetadataCatalog.get(name).as_dict():
        name = MetadataCatalog.get(name).get(SOURCE_KEY)
    return name


def read_class_list(path: str) -> Dict:
    """Parse and check a class-list file (module docstring); errors name the file."""
    spec = read_json(path, "class-list (ZSD.CLASS_LIST)")
    keys = ("thing_classes", "seen_classes", "unseen_classes", "datasets")
    if not isinstance(spec, dict) or any(k not in spec for k in keys):
        raise ValueError(f"class-list file {path} must hold the keys {keys}")
    return spec


def write_class_list(path: str, thing_classes: Sequence[str], seen_classes: Sequence[str],
                     unseen_classes: Sequence[str], datasets: Mapping[str, str],
                     class_embeddings: Optional[np.ndarray] = None) -> None:
    """Write a class-list file atomically."""
    write_json(path, {
        "thing_classes": list(thing_classes), "seen_classes": list(seen_classes),
        "unseen_classes": list(unseen_classes),
        "class_embeddings": None if class_embeddings is None else np.asarray(class_embeddings).tolist(),
        "datasets": dict(datasets)})


def register_class_list(path: str) -> List[str]:
    """Register every dataset of the class-list file ``path``; returns their names."""
    spec = read_class_list(path)
    for name, source in spec["datasets"].items():
        try:
            register_reindexed(name, source, spec["thing_classes"], spec["seen_classes"],
                               spec["unseen_classes"], spec.get("class_embeddings"))
        except (KeyError, ValueError) as e:
            raise type(e)(f"class-list file {path}: {e.args[0]}") from None
    return list(spec["datasets"])
