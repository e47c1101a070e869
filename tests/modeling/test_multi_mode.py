"""ZSD and GZSD scored from one forward pass (issue 17, item 6) give exactly the detections of two
detectors, one built per mode, for both box classifiers and both GZSD scorings."""
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.modeling import build_model

from zsdet.config import get_zsdet_cfg
from zsdet.modeling.multi_mode import MultiModeDetector

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "quick_schedules" / "zsd_shapes_tiny_instant_test.yaml"
MODES = ("zsd", "gzsd")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images():
    cfg = get_zsdet_cfg(str(CONFIG))
    mapper = DatasetMapper(cfg, is_train=False)
    return [mapper(d) for d in DatasetCatalog.get(cfg.ZSD.TEST_GZSD)[:3]]


def detector(mode, opts):
    cfg = get_zsdet_cfg(str(CONFIG), ["MODEL.ZSD.MODE", mode, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.01",
                                      "TEST.DETECTIONS_PER_IMAGE", "1000", *opts])
    torch.manual_seed(0)  # the same untrained weights for every mode
    return build_model(cfg).eval()


@pytest.mark.parametrize("opts", [["MODEL.ZSD.GZSD_SEEN_THRESH", "0.0"], ["MODEL.ZSD.CLASSIFIER", "semantic"],
                                  ["MODEL.ZSD.GZSD_SCORING", "joint"],  # untrained: seen scores are low
                                  ["MODEL.ZSD.GZSD_SEEN_THRESH", "0.0", "MODEL.ZSD.ZSD_UNSEEN_LOGIT_BIAS", "2.0"]])
def test_one_pass_equals_one_detector_per_mode(images, opts):
    with torch.no_grad():
        shared = MultiModeDetector(detector("gzsd", opts), MODES).eval()(images)
        for mode in MODES:
            alone = detector(mode, opts)(images)
            for one, both in zip(alone, shared):
                a, b = one["instances"], both[mode]["instances"]
                assert a.image_size == b.image_size and len(a) == len(b)
                for field in ("pred_boxes", "scores", "pred_classes"):
                    x, y = a.get(field), b.get(field)
                    x, y = (x.tensor, y.tensor) if field == "pred_boxes" else (x, y)
                    assert torch.equal(x, y), (mode, field)
    assert sum(len(out[mode]["instances"]) for out in shared for mode in MODES) > 0
    classes = [{mode: set(out[mode]["instances"].pred_classes.tolist()) for mode in MODES} for out in shared]
    assert any(c["gzsd"] - c["zsd"] for c in classes)  # each mode's scoring applied: seen classes in GZSD only
