"""The evaluate stage scores ZSD and GZSD from one inference pass over their shared test images
(issue 17, item 6), with the metrics of one pass per mode."""
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model

import zsdet.engine.zsd_pipeline as zsd_pipeline
from zsdet.config import get_zsdet_cfg
from zsdet.engine import ZSDPipeline
from zsdet.evaluation import ZSDEvaluator

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "quick_schedules" / "zsd_shapes_tiny_instant_test.yaml"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_one_pass_scores_both_modes_with_the_metrics_of_two(tmp_path, monkeypatch):
    opts = ["OUTPUT_DIR", str(tmp_path), "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.01"]
    cfg = get_zsdet_cfg(str(CONFIG), opts)
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg).state_dict()}, tmp_path / "weights.pth")
    backbone_images = []

    def counting_build_model(cfg):
        model = build_model(cfg)
        model.backbone.register_forward_hook(lambda module, args, out: backbone_images.append(len(args[0])))
        return model

    monkeypatch.setattr(zsd_pipeline, "build_model", counting_build_model)
    one_pass = ZSDPipeline(cfg).evaluate_method(str(tmp_path / "weights.pth"), "linear", "one_pass")
    test_images = len(DatasetCatalog.get(cfg.ZSD.TEST_GZSD))
    assert sum(backbone_images) == test_images  # not once per mode

    for mode, dataset in (("zsd", cfg.ZSD.TEST_ZSD), ("gzsd", cfg.ZSD.TEST_GZSD)):
        alone = get_zsdet_cfg(str(CONFIG), [*opts, "MODEL.ZSD.MODE", mode])
        model = build_model(alone)
        model.load_state_dict(torch.load(tmp_path / "weights.pth", weights_only=True)["model"])
        separate = inference_on_dataset(model, build_detection_test_loader(alone, dataset),
                                        ZSDEvaluator(dataset, str(tmp_path / mode), mode=mode))
        assert separate[mode] == one_pass[mode] and len(separate[mode]) >= 4, mode
