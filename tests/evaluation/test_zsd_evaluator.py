"""ZSDEvaluator end to end on a tiny dataset registered for the test."""
import json
import uuid

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode, Boxes, Instances

from zsdet.evaluation import ZSDEvaluator

CLASSES = ["a", "b", "c"]  # a, b seen; c unseen


def ann(xywh, cat, crowd=0):
    return {"bbox": xywh, "bbox_mode": BoxMode.XYWH_ABS, "category_id": cat, "iscrowd": crowd}


RECORDS = [
    {"file_name": "1.png", "image_id": 1, "height": 64, "width": 64,
     "annotations": [ann([0, 0, 10, 10], 0), ann([20, 20, 10, 10], 2)]},
    {"file_name": "2.png", "image_id": 2, "height": 64, "width": 64,
     "annotations": [ann([5, 5, 20, 20], 1), ann([30, 30, 30, 30], 2, crowd=1)]},
    {"file_name": "3.png", "image_id": 3, "height": 64, "width": 64,
     "annotations": [ann([40, 40, 10, 10], 1)]},
    {"file_name": "4.png", "image_id": 4, "height": 64, "width": 64, "annotations": []},
]
# (image_id, XYXY box, score, class)
PREDICTIONS = [
    (1, [0, 0, 10, 5.5], 0.9, 0),  # a: IoU 0.55 -> TP at 0.4 / 0.5, FP at 0.6
    (1, [40, 40, 50, 50], 0.7, 1),  # b: FP in image 1
    (1, [20, 20, 30, 30], 0.3, 2),  # c: TP, ranked below the FPs of c
    (2, [5, 5, 25, 25], 0.95, 1),  # b: TP
    (2, [30, 30, 60, 60], 0.6, 2),  # c: on the crowd box -> ignored
    (2, [0, 40, 10, 50], 0.5, 2),  # c: FP
    (4, [0, 0, 5, 5], 0.4, 2),  # c: FP in an image without GT
]


@pytest.fixture
def dataset_name():
    name = f"zsdet_test_zsd_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: RECORDS)
    MetadataCatalog.get(name).set(thing_classes=CLASSES, seen_classes=["a", "b"],
                                  unseen_classes=["c"], zsd_mode="gzsd", evaluator_type="zsd")
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def run(evaluator, predictions=PREDICTIONS, image_ids=(1, 2, 3, 4)):
    evaluator.reset()
    for image_id in image_ids:
        rows = [p for p in predictions if p[0] == image_id]
        inst = Instances((64, 64))
        boxes = torch.tensor([r[1] for r in rows], dtype=torch.float32)
        inst.pred_boxes = Boxes(boxes.reshape(-1, 4))
        inst.scores = torch.tensor([r[2] for r in rows], dtype=torch.float32)
        inst.pred_classes = torch.tensor([r[3] for r in rows], dtype=torch.int64)
        evaluator.process([{"image_id": image_id}], [{"instances": inst}])
    return evaluator.evaluate()


def test_gzsd_seen_unseen_and_harmonic_mean(dataset_name, tmp_path):
    result = run(ZSDEvaluator(dataset_name, str(tmp_path)))
    r = result["gzsd"]
    # a: AP 1, recall 1 / 1 / 0;  b: N 2, TP .95 then FP .7 -> AP 1/2, recall 1/2;
    # c: ignored .6, FP .5, FP .4, TP .3 -> AP 1/3, recall 1
    assert r["seen_mAP_iou0.5"] == pytest.approx(75.0)
    assert r["unseen_mAP_iou0.5"] == pytest.approx(100 / 3)
    assert r["hm_mAP_iou0.5"] == pytest.approx(2 * 75 * (100 / 3) / (75 + 100 / 3))
    assert r["seen_recall@100_iou0.4"] == pytest.approx(75.0)
    assert r["seen_recall@100_iou0.6"] == pytest.approx(25.0)
    assert r["unseen_recall@100_iou0.6"] == pytest.approx(100.0)
    assert r["hm_recall@100_iou0.6"] == pytest.approx(40.0)
    # 12 protocol figures + 8 top-1 labelling figures (tests/evaluation/test_top1_labels.py)
    assert all(type(v) is float for v in r.values()) and len(r) == 12 + 8

    saved = json.loads((tmp_path / "zsd_results.json").read_text())
    per_class = {row["class"]: row for row in saved["per_class"]}
    assert per_class["b"]["num_gt"] == 2 and per_class["c"]["num_gt"] == 1  # crowd not counted
    assert per_class["c"]["split"] == "unseen" and per_class["c"]["num_detections"] == 4
    assert per_class["a"]["recall@100_iou0.6"] == 0.0
    assert saved["summary"]["hm"]["recall@100_iou0.6"] == pytest.approx(40.0)
    assert (tmp_path / "zsd_per_class.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_zsd_mode_scores_unseen_only_before_the_top_k_cut(dataset_name):
    result = run(ZSDEvaluator(dataset_name, mode="zsd"))
    assert set(result) == {"zsd"}
    assert result["zsd"] == pytest.approx({"mAP_iou0.5": 100 / 3, "recall@100_iou0.4": 100.0,
                                           "recall@100_iou0.5": 100.0, "recall@100_iou0.6": 100.0})
    # one detection per image: image 1 keeps its unseen TP although two seen detections score
    # higher; image 2 keeps only the ignored one -> ranking: ignored, FP .4, TP .3 -> AP 1/2
    result = run(ZSDEvaluator(dataset_name, mode="zsd", max_dets_per_image=1,
                              iou_thresholds=(0.5,)))
    assert result["zsd"] == pytest.approx({"mAP_iou0.5": 50.0, "recall@1_iou0.5": 100.0})


def test_only_processed_images_are_evaluated(dataset_name):
    result = run(ZSDEvaluator(dataset_name, mode="seen"), image_ids=(1, 2))
    # image 3's b box is not evaluated: b has N 1 -> AP 1, recall 1
    assert result["seen"]["mAP_iou0.5"] == pytest.approx(100.0)
    assert result["seen"]["recall@100_iou0.6"] == pytest.approx(50.0)


def test_bad_mode_and_predictions_raise(dataset_name):
    with pytest.raises(ValueError, match="mode"):
        ZSDEvaluator(dataset_name, mode="open")
    with pytest.raises(KeyError, match="image_id"):
        run(ZSDEvaluator(dataset_name), image_ids=(1, 99))
    with pytest.raises(ValueError, match="outside thing_classes"):
        run(ZSDEvaluator(dataset_name), predictions=[(1, [0, 0, 1, 1], 0.5, 7)], image_ids=(1,))


@pytest.mark.parametrize("meta, error, match", [
    (dict(seen_classes=["a", "b"], unseen_classes=["c"]), KeyError, "zsd_mode"),
    (dict(seen_classes=["a"], unseen_classes=["c"], zsd_mode="gzsd"), ValueError,
     r"\['b'\] are neither seen nor unseen"),
    (dict(seen_classes=["a", "b"], unseen_classes=["c", "d"], zsd_mode="zsd"), KeyError,
     r"\['d'\] not in thing_classes"),
    (dict(seen_classes=["a", "b"], zsd_mode="zsd"), KeyError, "unseen_classes"),
])
def test_bad_metadata_raises(meta, error, match):
    name = f"zsdet_test_zsd_meta_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(thing_classes=CLASSES, **meta)
    try:
        with pytest.raises(error, match=match):
            ZSDEvaluator(name)
    finally:
        MetadataCatalog.remove(name)


def test_no_predictions_returns_empty_dict(dataset_name):
    evaluator = ZSDEvaluator(dataset_name)
    evaluator.reset()
    assert evaluator.evaluate() == {}
