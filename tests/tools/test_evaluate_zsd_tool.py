"""tools/evaluate_zsd.py: the protocol on COCO-format GT and results files, equal to the
pipeline's ZSDEvaluator on the same detections, and its errors on bad input."""
import json
import logging

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from zsdet.data.datasets.coco_zsd import COCO_THING_CATEGORIES
from zsdet.evaluation import ZSDEvaluator

DATASET = "zsd_shapes_tiny_test_gzsd"


@pytest.fixture(scope="module")
def tool(load_script):
    return load_script("tools/evaluate_zsd.py")


def random_detections(records, num_classes, seed=0):
    """Per image: jittered copies of its GT boxes with right and wrong classes, plus random
    boxes; (image_id, XYXY float32 (n, 4), scores float32 (n,), classes (n,)) sorted by score."""
    rng = np.random.default_rng(seed)
    out = []
    for rec in records:
        gt = np.array([a["bbox"] for a in rec["annotations"]], dtype=np.float64).reshape(-1, 4)
        gt[:, 2:] += gt[:, :2]
        copies = np.repeat(gt, 3, axis=0) + rng.normal(0, 3, (3 * len(gt), 4))
        noise = rng.uniform(0, 80, (5, 2))
        boxes = np.concatenate([copies, np.concatenate([noise, noise + rng.uniform(8, 30, (5, 2))], 1)])
        classes = np.concatenate([np.repeat([a["category_id"] for a in rec["annotations"]], 3),
                                  rng.integers(0, num_classes, 5)])
        flip = rng.random(len(classes)) < 0.3
        classes[flip] = rng.integers(0, num_classes, int(flip.sum()))
        scores = rng.random(len(classes)).astype(np.float32)
        scores[rng.random(len(scores)) < 0.1] = 0.5  # ties
        order = np.argsort(-scores, kind="stable")
        out.append((rec["image_id"], boxes[order].astype(np.float32), scores[order], classes[order]))
    return out


def pipeline_metrics(dataset, mode, dets, output_dir):
    evaluator = ZSDEvaluator(dataset, str(output_dir), mode=mode, distributed=False)
    evaluator.reset()
    for image_id, boxes, scores, classes in dets:
        inst = Instances((96, 96))
        inst.pred_boxes = Boxes(torch.from_numpy(boxes))
        inst.scores = torch.from_numpy(scores)
        inst.pred_classes = torch.from_numpy(classes)
        evaluator.process([{"image_id": image_id}], [{"instances": inst}])
    return evaluator.evaluate()


def coco_results(dets, category_ids):
    """COCO results rows of ``dets`` (boxes as XYWH, category ids of the json)."""
    rows = []
    for image_id, boxes, scores, classes in dets:
        for box, score, cls in zip(boxes.tolist(), scores.tolist(), classes.tolist()):
            rows.append({"image_id": image_id, "category_id": category_ids[cls],
                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": score})
    return rows


@pytest.fixture(scope="module")
def shapes_files(tmp_path_factory):
    """GT json (all boxes), split json, detections and their results json for the tiny shapes."""
    tmp = tmp_path_factory.mktemp("evaluate_zsd")
    records = DatasetCatalog.get(DATASET)
    meta = MetadataCatalog.get(DATASET)
    dets = random_detections(records, len(meta.thing_classes))
    with open(meta.json_file) as f:
        gt = json.load(f)
    contiguous_to_id = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    category_ids = [contiguous_to_id[i] for i in range(len(meta.thing_classes))]
    split = tmp / "split.json"
    split.write_text(json.dumps({"seen": meta.seen_classes, "unseen": meta.unseen_classes}))
    # a detection on an image outside the GT json and one on a non-test image must be counted
    extra_image = {"id": 999999, "file_name": "none.png", "height": 96, "width": 96}
    gt["images"].append(extra_image)
    results = coco_results(dets, category_ids) + [
        {"image_id": 424242, "category_id": category_ids[0], "bbox": [0, 0, 5, 5], "score": 0.9},
        {"image_id": 999999, "category_id": category_ids[0], "bbox": [0, 0, 5, 5], "score": 0.9}]
    (tmp / "gt.json").write_text(json.dumps(gt))
    (tmp / "results.json").write_text(json.dumps(results))
    return tmp, dets, category_ids


def test_tool_equals_pipeline_evaluator(tool, shapes_files):
    tmp, dets, _ = shapes_files
    expected = {}
    for mode, dataset in (("zsd", "zsd_shapes_tiny_test_zsd"), ("gzsd", DATASET)):
        expected.update(pipeline_metrics(dataset, mode, dets, tmp / f"pipeline_{mode}"))
    out = tmp / "tool"
    metrics = tool.main([str(tmp / "gt.json"), str(tmp / "results.json"), "--split",
                         str(tmp / "split.json"), "--output", str(out), "--method", "m"])
    assert metrics == {"m": expected}
    assert 0 < expected["zsd"]["mAP_iou0.5"] < 100 and 0 < expected["gzsd"]["hm_mAP_iou0.5"] < 100
    assert json.loads((out / "metrics.json").read_text()) == {"m": expected}
    for mode in ("zsd", "gzsd"):
        ours = json.loads((out / "inference" / f"m_{mode}" / "zsd_results.json").read_text())
        theirs = json.loads((tmp / f"pipeline_{mode}" / "zsd_results.json").read_text())
        assert ours["per_class"] == theirs["per_class"] and ours["summary"] == theirs["summary"]
        assert (out / "inference" / f"m_{mode}" / "zsd_per_class.png").stat().st_size > 0
    inputs = json.loads((out / "inputs.json").read_text())
    assert inputs["detections"]["image_not_in_gt"] == 1
    assert inputs["detections"]["not_a_test_image"] == 1
    assert inputs["detections"]["evaluated"] == sum(len(d[2]) for d in dets)
    assert "ZSD R@100 .5" in (out / "results_table.txt").read_text()


def test_max_per_image_and_iou_options(tool, shapes_files):
    tmp, dets, _ = shapes_files
    ev = ZSDEvaluator(DATASET, None, mode="gzsd", iou_thresholds=(0.3, 0.7), max_dets_per_image=2,
                      distributed=False)
    ev.reset()
    for image_id, boxes, scores, classes in dets:
        inst = Instances((96, 96))
        inst.pred_boxes, inst.scores = Boxes(torch.from_numpy(boxes)), torch.from_numpy(scores)
        inst.pred_classes = torch.from_numpy(classes)
        ev.process([{"image_id": image_id}], [{"instances": inst}])
    metrics = tool.main([str(tmp / "gt.json"), str(tmp / "results.json"), "--split",
                         str(tmp / "split.json"), "--output", str(tmp / "opts"), "--mode", "gzsd",
                         "--iou", "0.3,0.7", "--max-per-image", "2", "--method", "m"])
    assert metrics == {"m": ev.evaluate()}
    assert "seen_recall@2_iou0.7" in metrics["m"]["gzsd"]


def write(tmp, name, payload):
    path = tmp / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


def run_tool(tool, tmp, gt, results, *extra):
    return tool.main([gt, results, "--split", str(tmp / "split.json"), "--output",
                      str(tmp / "err"), *extra])


def test_malformed_json_names_the_file(tool, shapes_files):
    tmp, _, _ = shapes_files
    bad = write(tmp, "broken.json", '[{"image_id": 1,')
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        run_tool(tool, tmp, str(tmp / "gt.json"), bad)
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        run_tool(tool, tmp, bad, str(tmp / "results.json"))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        run_tool(tool, tmp, str(tmp / "gt.json"), str(tmp / "missing.json"))
    with pytest.raises(ValueError, match="expected a COCO results list"):
        run_tool(tool, tmp, str(tmp / "gt.json"), write(tmp, "dict.json", {"a": 1}))
    with pytest.raises(ValueError, match="entry 1 has no 'score'"):
        run_tool(tool, tmp, str(tmp / "gt.json"), write(tmp, "noscore.json", [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1},
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]))


def test_bad_detections_are_errors(tool, shapes_files):
    tmp, _, category_ids = shapes_files
    gt = str(tmp / "gt.json")
    row = {"image_id": 3000001, "category_id": category_ids[0], "bbox": [0, 0, 5, 5], "score": 0.5}
    with pytest.raises(KeyError, match=r"category ids \[0\] are not in the ground truth"):
        run_tool(tool, tmp, gt, write(tmp, "zero_based.json", [row, {**row, "category_id": 0}]))
    with pytest.raises(ValueError, match="nan.json: 1 detection.*NaN or infinite bbox, first entry 1"):
        run_tool(tool, tmp, gt, write(tmp, "nan.json", [row, {**row, "bbox": [0, float("nan"), 5, 5]}]))
    with pytest.raises(ValueError, match="NaN or infinite score"):
        run_tool(tool, tmp, gt, write(tmp, "nan_score.json", [{**row, "score": float("nan")}]))
    with pytest.raises(ValueError, match=r"\[x, y, w, h\]"):
        run_tool(tool, tmp, gt, write(tmp, "short.json", [{**row, "bbox": [0, 0, 5]}]))
    with pytest.raises(KeyError, match="not among the dataset.s classes"):
        tool.main([gt, write(tmp, "empty_results.json", []), "--split",
                   write(tmp, "other_split.json", {"unseen": ["no such class"]})])


def test_empty_results_give_zeros_and_a_warning(tool, shapes_files, caplog):
    tmp, _, _ = shapes_files
    with caplog.at_level(logging.WARNING, logger="zsdet"):
        metrics = run_tool(tool, tmp, str(tmp / "gt.json"), write(tmp, "empty.json", []),
                           "--method", "m")
    assert "empty results list" in caplog.text
    assert metrics["m"]["zsd"]["mAP_iou0.5"] == 0.0
    assert metrics["m"]["gzsd"]["hm_recall@100_iou0.5"] == 0.0


def test_named_split_and_protocol_test_images(tool, tmp_path):
    """coco65_15 resolves to the shipped table; test images = images with an unseen annotation
    (a crowd one counts); crowd boxes are ignored; --all-images widens the set."""
    cats = [{"id": c["id"], "name": c["name"]} for c in COCO_THING_CATEGORIES]  # 1 person, 5 airplane, 17 cat
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 100} for i in (1, 2, 3)]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 17, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 1},
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [60, 60, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 5, "image_id": 3, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 6, "image_id": 1, "category_id": 5, "bbox": [80, 80, 0, 5], "area": 0, "iscrowd": 0},
    ]
    gt = write(tmp_path, "gt.json", {"images": images, "annotations": anns, "categories": cats})
    results = write(tmp_path, "res.json", [
        {"image_id": 1, "category_id": 5, "bbox": [0, 0, 20, 20], "score": 0.9},
        {"image_id": 2, "category_id": 17, "bbox": [0, 0, 50, 50], "score": 0.8},  # on the crowd box
        {"image_id": 2, "category_id": 1, "bbox": [60, 60, 20, 20], "score": 0.7},
        {"image_id": 3, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.6},
    ])
    out = tmp_path / "out"
    metrics = tool.main([gt, results, "--split", "coco65_15", "--output", str(out), "--method", "m"])
    inputs = json.loads((out / "inputs.json").read_text())
    assert inputs["num_test_images"] == 2 and inputs["detections"]["not_a_test_image"] == 1
    assert len(inputs["unseen_classes"]) == 15 and "toothbrush" in inputs["seen_classes"]
    assert metrics["m"]["zsd"]["mAP_iou0.5"] == 100.0  # airplane found; cat only has a crowd box
    per_class = json.loads((out / "inference" / "m_zsd" / "zsd_results.json").read_text())["per_class"]
    airplane = next(r for r in per_class if r["class"] == "airplane")
    assert airplane["num_gt"] == 1  # the zero-width box is left out
    assert next(r for r in per_class if r["class"] == "cat")["num_gt"] == 0
    assert metrics["m"]["gzsd"]["seen_recall@100_iou0.5"] == 50.0  # person in image 1 missed
    all_images = tool.main([gt, results, "--split", "coco65_15", "--output", str(out),
                            "--all-images", "--method", "m", "--mode", "gzsd"])
    assert all_images["m"]["gzsd"]["seen_recall@100_iou0.5"] == pytest.approx(200 / 3)
