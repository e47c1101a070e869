"""COCO-format dress rehearsal: a fake COCO 2014 with COCO's structure goes through
prepare_coco_zsd.py (split rules checked against a plain re-statement of the protocol) and then
through every stage of the real COCO config, configs/COCO-ZSD/faster_rcnn_R_101_FPN_65_15.yaml,
with command-line overrides that only shrink sizes (checked below), up to metrics.json.

The backbone weights the config downloads are replaced by a calibrated stand-in
(zsdet.data.datasets.fake_coco.write_standin_backbone; MODEL.WEIGHTS "" makes ResNet-101 with
FrozenBN diverge). About 2 min on 2 shared CPU cores, most of it the detector run.
"""
import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from zsdet.config import get_zsdet_cfg
from zsdet.data.datasets.coco_zsd import (
    DEFAULT_EMBEDDINGS, SPLITS, load_class_split, split_dir,
)
from zsdet.data.datasets.fake_coco import coco_categories, write_fake_coco, write_standin_backbone
from zsdet.data.embeddings import read_embedding_table
from zsdet.data.shipped import resolve_data_path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "COCO-ZSD" / "faster_rcnn_R_101_FPN_65_15.yaml"
# Command-line overrides of the real config: each one only shrinks a size (checked by
# test_overrides_only_shrink_sizes), apart from the keys in NOT_SIZES.
SHRINK = {
    "INPUT.MIN_SIZE_TRAIN": (48,), "INPUT.MAX_SIZE_TRAIN": 64,
    "INPUT.MIN_SIZE_TEST": 48, "INPUT.MAX_SIZE_TEST": 64,
    "DATALOADER.NUM_WORKERS": 0, "SOLVER.IMS_PER_BATCH": 2, "SOLVER.MAX_ITER": 2,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 200, "MODEL.RPN.POST_NMS_TOPK_TRAIN": 100,
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 200, "MODEL.RPN.POST_NMS_TOPK_TEST": 100,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64, "ZSD.FEATURES.ROIS_PER_IMAGE": 64,
    "SYNTHESIS.GEN_HIDDEN": 64, "SYNTHESIS.DISC_HIDDEN": 64, "SYNTHESIS.ENC_HIDDEN": 64,
    "SYNTHESIS.CLF_FF_HIDDEN": 64, "SYNTHESIS.EPOCHS": 1, "SYNTHESIS.CLS_PRETRAIN_EPOCHS": 1,
    "SYNTHESIS.NUM_PER_CLASS": 10, "SYNTHESIS.VAL_SYNTH_SETS": 50,
    "ZSD.CLASSIFIER.EPOCHS": 1, "ZSD.BASELINE.EPOCHS": 1,
}
NOT_SIZES = ("MODEL.WEIGHTS", "MODEL.DEVICE", "OUTPUT_DIR")  # stand-in weights, no GPU, tmp dir


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def _overrides(weights, out_dir):
    shrink = dict(SHRINK)
    samples = get_zsdet_cfg(str(CONFIG)).ZSD.FEATURES.SAMPLES_PER_EPOCH
    if samples:  # the config caps the generator's epoch for COCO: shrink the cap too
        shrink["ZSD.FEATURES.SAMPLES_PER_EPOCH"] = min(samples, 256)
    pairs = {**shrink, "MODEL.WEIGHTS": str(weights), "MODEL.DEVICE": "cpu",
             "OUTPUT_DIR": str(out_dir)}
    return [str(v) for kv in pairs.items() for v in kv]


def test_overrides_only_shrink_sizes():
    cfg = get_zsdet_cfg(str(CONFIG))
    opts = _overrides("w.pth", "out")
    for key, value in zip(opts[::2], opts[1::2]):
        if key in NOT_SIZES:
            continue
        ours, theirs = np.atleast_1d(ast.literal_eval(value)), np.atleast_1d(_get(cfg, key))
        assert ours.max() <= theirs.min(), f"{key}: {value} does not shrink {_get(cfg, key)}"


# ----------------------------------------------------------------------- the split rules, restated


def _expected_splits(train, test, split, min_size=32):
    """Image ids of each split and annotation ids of its ground truth, by the protocol's rules
    written out plainly (one image at a time)."""
    names = {c["id"]: c["name"] for c in train["categories"]}
    seen = {i for i, n in names.items() if n in split.seen}
    unseen = {i for i, n in names.items() if n in split.unseen}

    def by_image(coco):
        anns = {im["id"]: [] for im in coco["images"]}
        for a in coco["annotations"]:
            anns[a["image_id"]].append(a)
        return anns

    def valid(a):
        return a["bbox"][2] >= 1 and a["bbox"][3] >= 1 and a["area"] > 0

    def large(coco, image_id):
        im = next(i for i in coco["images"] if i["id"] == image_id)
        return min(im["width"], im["height"]) >= min_size

    train_anns, test_anns = by_image(train), by_image(test)
    images = {
        "seen_only": {i for i, a in train_anns.items()
                      if a and all(x["category_id"] in seen for x in a) and large(train, i)},
        "test": {i for i, a in test_anns.items() if any(x["category_id"] in unseen for x in a)},
        "unseen_real": {i for i, a in test_anns.items()
                        if a and all(x["category_id"] in unseen for x in a) and large(test, i)},
    }

    def gt(anns, image_ids, group):
        return {a["id"] for i in image_ids for a in anns[i] if a["category_id"] in group and valid(a)}

    return images, lambda which, image_ids, group: gt(
        train_anns if which == "train" else test_anns, image_ids, {"seen": seen, "unseen": unseen,
                                                                   "all": seen | unseen}[group])


@pytest.fixture(scope="module")
def fake_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake_coco_root")
    paths = write_fake_coco(str(root / "coco"))
    jsons = {s: json.loads(Path(p).read_text()) for s, p in paths.items()}
    return root, jsons


def test_fake_coco_has_coco_structure(fake_coco):
    root, jsons = fake_coco
    categories = coco_categories()
    assert len(categories) == 80 and categories[-1] == {"id": 90, "name": "toothbrush",
                                                        "supercategory": ""}
    unseen = {c["id"] for c in categories if c["name"] in load_class_split().unseen}
    for split, coco in jsons.items():
        assert coco["categories"] == categories
        anns = coco["annotations"]
        assert any(a["iscrowd"] for a in anns) and any(a["bbox"][2] == 0 for a in anns)
        per_image = {im["id"]: [] for im in coco["images"]}
        for a in anns:
            per_image[a["image_id"]].append(a["category_id"])
        assert any(not c for c in per_image.values()), "an image without annotations"
        assert any(c and set(c) <= unseen for c in per_image.values()), "an unseen-only image"
        assert max(len(c) for c in per_image.values()) >= 6, "several objects per image"
        for im in coco["images"][:10]:  # the files match the json sizes (detectron2 checks it)
            h, w = cv2.imread(str(root / "coco" / f"{split}2014" / im["file_name"])).shape[:2]
            assert (w, h) == (im["width"], im["height"])
            assert 1.0 <= max(w, h) / min(w, h) <= 2.7  # COCO-like aspect ratios
    train_classes = {a["category_id"] for a in jsons["train"]["annotations"]}
    assert train_classes >= {c["id"] for c in categories} - unseen  # every seen class is there


@pytest.fixture(scope="module")
def prepared(fake_coco, load_script):
    root, jsons = fake_coco
    counts = load_script("datasets/prepare_coco_zsd.py").main(["--root", str(root)])
    out = split_dir(str(root), "65_15")
    return root, jsons, counts, {s: json.loads(Path(out, f"{s}.json").read_text()) for s in SPLITS}


def test_prepare_follows_the_split_rules(prepared):
    root, jsons, counts, splits = prepared
    images, gt = _expected_splits(jsons["train"], jsons["val"], load_class_split())

    def ids(split):
        return {im["id"] for im in splits[split]["images"]}

    def ann_ids(split):
        return {a["id"] for a in splits[split]["annotations"]}

    assert ids("train") | ids("val") == images["seen_only"] and not ids("train") & ids("val")
    assert len(ids("val")) == round(0.02 * len(images["seen_only"])) >= 1
    assert ids("test_zsd") == ids("test_gzsd") == images["test"]
    assert ids("unseen_real") == images["unseen_real"]
    for split, which, group in (("train", "train", "seen"), ("val", "train", "seen"),
                                ("test_zsd", "test", "unseen"), ("test_gzsd", "test", "all"),
                                ("unseen_real", "test", "unseen")):
        assert ann_ids(split) == gt(which, ids(split), group), split
        assert counts[split] == {"images": len(ids(split)), "annotations": len(ann_ids(split))}
        assert splits[split]["categories"] == jsons["train"]["categories"]  # all 80, by id
    crowd = [a for s in SPLITS for a in splits[s]["annotations"] if a["iscrowd"]]
    assert crowd, "crowd boxes of the split's group stay (ignore regions)"
    # no --embeddings: SUZOD's fastText table, shipped with the repository
    written = read_embedding_table(Path(split_dir(str(root), "65_15"), "class_embeddings.tsv"))
    shipped = read_embedding_table(resolve_data_path(DEFAULT_EMBEDDINGS))
    assert written[0] == shipped[0] and len(written[0]) == 81  # __background__ + 80 classes
    np.testing.assert_array_equal(written[1], shipped[1])


def test_every_stage_of_the_real_coco_config_runs(prepared, tmp_path):
    root, jsons, counts, splits = prepared
    train_images = sorted((root / "coco" / "train2014").glob("*.jpg"))[:8]
    cfg = get_zsdet_cfg(str(CONFIG), ["MODEL.DEVICE", "cpu"])
    weights = write_standin_backbone(cfg, [str(p) for p in train_images],
                                     str(tmp_path / "standin_R101.pth"))
    out = tmp_path / "out"
    env = dict(os.environ, DETECTRON2_DATASETS=str(root))  # the COCO splits register at import
    start = time.time()
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"),
                           "--config-file", str(CONFIG), *_overrides(weights, out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.time() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    log = proc.stdout + proc.stderr
    for stage in ("detector", "features", "generator", "classifier", "baseline", "evaluate"):
        assert f"=== stage {stage} ===" in log
    for artifact in ("model_final.pth", "roi_bank/COMPLETE", "generator/model_best.pth",
                     "model_zsd.pth", "model_baseline.pth", "results_table.txt"):
        assert (out / artifact).exists(), artifact
    used = get_zsdet_cfg(str(out / "config.yaml"))
    assert (used.MODEL.RESNETS.DEPTH, used.MODEL.ROI_HEADS.NUM_CLASSES) == (101, 80)
    assert used.DATASETS.TRAIN == ("coco_2014_zsd_65_15_train",)
    n_test = counts["test_zsd"]["images"]
    assert f"Loaded {n_test} images in COCO format from {root}/coco/zsd/65_15/test_zsd.json" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"synthesis", "baseline"}
    for method in metrics.values():
        assert set(method["zsd"]) == {"mAP_iou0.5", "recall@100_iou0.4", "recall@100_iou0.5",
                                      "recall@100_iou0.6"}
        assert {f"{g}_mAP_iou0.5" for g in ("seen", "unseen", "hm")} <= set(method["gzsd"])
        for value in [*method["zsd"].values(), *method["gzsd"].values()]:
            assert value is None or 0.0 <= value <= 100.0
    print(f"train_net.py, all stages of the COCO config on the fake COCO: {elapsed:.0f} s")
