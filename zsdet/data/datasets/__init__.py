"""Zero-shot detection datasets, registered in detectron2's ``DatasetCatalog`` / ``MetadataCatalog``
when this package is imported (registration is lazy: no file is read or generated at import).

* :mod:`.shapes`: the built-in synthetic set (``zsd_shapes_*``, ``zsd_shapes_tiny_*``).
* :mod:`.dense_scenes`: the built-in set that ranks methods (``zsd_dense_*``, ``zsd_dense_tiny_*``).
* :mod:`.coco_zsd`: COCO 2014 65/15 (``coco_2014_zsd_65_15_*``), prepared by
  ``datasets/prepare_coco_zsd.py``.
* :mod:`.fake_coco`: a fake COCO 2014 of realistic structure for dress rehearsals (not registered).

Metadata of every split: ``thing_classes`` (all classes, one stable index space), ``seen_classes``,
``unseen_classes``, ``class_embeddings_file`` (and ``class_embeddings`` where known at
registration), ``evaluator_type="zsd"``, ``zsd_mode`` ("seen" / "zsd" / "gzsd"), ``json_file``,
``image_root``.
"""
from .coco_zsd import register_coco_zsd
from .dense_scenes import register_zsd_dense
from .shapes import register_zsd_shapes

__all__ = ["register_coco_zsd", "register_zsd_dense", "register_zsd_shapes"]
