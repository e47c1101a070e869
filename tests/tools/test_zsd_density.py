"""benchmarks/zsd_density.py: density bins and per-bin ZSD scoring on a hand-made test set."""
import argparse

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode, Boxes, Instances

DATASET = "test_zsd_density_hand_made"


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/zsd_density.py")


def test_bins_are_parsed_and_assigned(bench):
    bins = bench.parse_bins("5-7, 8-9,10,11-12")
    assert bins == ((5, 7), (8, 9), (10, 10), (11, 12))
    assert [bench.bin_label(b) for b in bins] == ["5-7", "8-9", "10", "11-12"]
    counts = np.array([4, 5, 7, 8, 10, 12, 13])
    assert bench.assign_bins(counts, bins).tolist() == [-1, 0, 0, 1, 2, 3, -1]
    for bad in ("8-5", "5-8,8-9", "9,5", "a-b", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_bins(bad)


def _box(x):
    return [x, 10.0, 20.0, 20.0]  # XYWH


def test_each_bin_is_scored_on_its_own_images(bench):
    # image 1: 2 objects, its unseen "u" found; image 2: 4 objects, its unseen "u" missed
    def annotations(*objects):
        return [{"bbox": _box(x), "bbox_mode": BoxMode.XYWH_ABS, "category_id": c} for x, c in objects]

    records = [{"image_id": 1, "annotations": annotations((0, 1), (40, 0))},
               {"image_id": 2, "annotations": annotations((0, 1), (40, 0), (80, 0), (120, 0))}]
    DatasetCatalog.register(DATASET, lambda: records)
    MetadataCatalog.get(DATASET).set(thing_classes=["s", "u"], seen_classes=["s"], unseen_classes=["u"])
    try:
        evaluator = bench.DensityZSDEvaluator(DATASET, bench.objects_per_image(DATASET),
                                              bench.parse_bins("1-3,4-6"))
        outputs = []
        for x in (0.0, 150.0):  # a hit on image 1, a miss on image 2
            inst = Instances((200, 200))
            inst.pred_boxes = Boxes(torch.tensor([[x, 10.0, x + 20.0, 30.0]]))
            inst.scores = torch.tensor([0.9])
            inst.pred_classes = torch.tensor([1])
            outputs.append({"instances": inst})
        evaluator.process([{"image_id": 1}, {"image_id": 2}], outputs)
        results = evaluator.evaluate()
    finally:
        DatasetCatalog.remove(DATASET)
        MetadataCatalog.remove(DATASET)
    assert {k: (v["images"], v["unseen_gt"]) for k, v in results.items()} == {
        "all": (2, 2), "1-3": (1, 1), "4-6": (1, 1)}
    assert results["all"]["recall@100_iou0.5"] == pytest.approx(50.0)
    assert results["1-3"]["recall@100_iou0.5"] == pytest.approx(100.0)
    assert results["4-6"]["recall@100_iou0.5"] == pytest.approx(0.0)
    assert results["1-3"]["mAP_iou0.5"] == pytest.approx(100.0)
