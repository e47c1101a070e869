"""``import zsdet`` registers its components in detectron2's registries and catalogs."""
from detectron2.data import DatasetCatalog
from detectron2.modeling import ROI_HEADS_REGISTRY

import zsdet  # noqa: F401


def test_roi_heads_registered():
    assert ROI_HEADS_REGISTRY.get("ZSDROIHeads").__name__ == "ZSDROIHeads"


def test_default_datasets_registered():
    names = set(DatasetCatalog.list())
    assert {"zsd_shapes_train", "zsd_shapes_test_zsd", "zsd_shapes_test_gzsd"} <= names
    assert "coco_2014_zsd_65_15_train" in names
