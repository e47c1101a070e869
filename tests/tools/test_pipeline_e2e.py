"""End-to-end smoke run of tools/train_net.py on the tiny shapes split (every stage), then resume,
--eval-only, and the retrained classifier's effect on the detector's predictions."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

import zsdet
from zsdet.engine import load_detector_weights

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "quick_schedules" / "zsd_shapes_tiny_instant_test.yaml"


def train_net(out_dir, *extra):
    cmd = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(CONFIG),
           *extra, "OUTPUT_DIR", str(out_dir)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("zsd_e2e")
    return out, train_net(out)


def cfg_for(out, **zsd):
    cfg = zsdet.get_zsdet_cfg(str(CONFIG), ["OUTPUT_DIR", str(out)])
    for k, v in zsd.items():
        setattr(cfg.MODEL.ZSD, k, v)
    return cfg


def test_every_stage_produces_its_artifact(run_dir):
    out, log = run_dir
    for name in ("model_final.pth", "roi_bank/COMPLETE", "generator/model_best.pth", "model_zsd.pth",
                 "model_baseline.pth", "metrics.json", "results_table.txt"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"synthesis", "baseline"}
    for method in metrics.values():
        assert set(method) == {"zsd", "gzsd"}
        assert "recall@100_iou0.5" in method["zsd"] and "hm_mAP_iou0.5" in method["gzsd"]
        for value in [*method["zsd"].values(), *method["gzsd"].values()]:
            assert value is None or 0.0 <= value <= 100.0  # None: NaN (no class with GT)
    assert "ZSD R@100 .5" in log  # the printed table
    assert (out / "inference" / "synthesis_zsd" / "zsd_per_class.png").exists()


def test_rerun_resumes_from_artifacts(run_dir):
    out, _ = run_dir
    before = (out / "metrics.json").read_text()
    log = train_net(out)
    for message in ("seen detector exists", "RoI feature bank complete", "retrained detector exists",
                    "baseline detector exists"):
        assert message in log
    assert json.loads((out / "metrics.json").read_text()) == json.loads(before)


def test_eval_only(run_dir):
    out, _ = run_dir
    log = train_net(out / "eval_only", "--eval-only", "MODEL.WEIGHTS", str(out / "model_zsd.pth"))
    metrics = json.loads((out / "eval_only" / "metrics.json").read_text())
    assert metrics["eval"] == json.loads((out / "metrics.json").read_text())["synthesis"]
    assert "eval" in log


def test_retrained_classifier_changes_predictions(run_dir):
    out, _ = run_dir
    image = cv2.imread(DatasetCatalog.get("zsd_shapes_tiny_test_gzsd")[0]["file_name"])
    outputs = {}
    for name, weights, mode in (("seen", "model_final.pth", "seen"), ("zsd", "model_zsd.pth", "zsd"),
                                ("gzsd", "model_zsd.pth", "gzsd")):
        cfg = cfg_for(out, MODE=mode)
        predictor = DefaultPredictor(cfg)  # builds the model; weights loaded with zsdet's checks
        load_detector_weights(predictor.model, str(out / weights))
        outputs[name] = predictor(image)["instances"]
    model_zsd = build_model(cfg_for(out))
    load_detector_weights(model_zsd, str(out / "model_zsd.pth"))
    seen_state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    key = "roi_heads.box_predictor.cls_score.weight"
    assert not torch.equal(model_zsd.state_dict()[key], seen_state[key])
    unseen = set(model_zsd.roi_heads.box_predictor.unseen_mask.nonzero().flatten().tolist())
    assert set(outputs["seen"].pred_classes.tolist()).isdisjoint(unseen)
    assert set(outputs["zsd"].pred_classes.tolist()) <= unseen
    assert len(outputs["zsd"]) > 0, "the retrained classifier must score unseen classes"
    assert os.path.getsize(out / "model_zsd.pth") > 0
