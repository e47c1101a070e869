"""An untrained classifier is never saved or reported (issue 10, item 3): zero epochs or a
non-positive batch size are errors naming the key and the value, raised before any work."""
from pathlib import Path

import pytest
import torch

from zsdet.config import get_zsdet_cfg
from zsdet.engine import ZSDPipeline
from zsdet.engine.box_classifier import fit_box_classifier

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("key,value", [("ZSD.CLASSIFIER.EPOCHS", "0"), ("ZSD.CLASSIFIER.BATCH_SIZE", "-5")])
def test_detection_classifier_stage_refuses_to_train_nothing(tmp_path, key, value):
    cfg = get_zsdet_cfg(str(REPO / "configs/quick_schedules/zsd_shapes_tiny_instant_test.yaml"),
                        ["OUTPUT_DIR", str(tmp_path), key, value])
    with pytest.raises(ValueError, match=rf"{key}.*got {value}"):
        ZSDPipeline(cfg).run(["classifier"])
    assert not (tmp_path / "model_zsd.pth").exists()


@pytest.mark.parametrize("epochs,batch_size", [(0, 4), (2, 0), (2, -5)])
def test_fit_box_classifier_rejects_empty_training(epochs, batch_size):
    classifier = torch.nn.Linear(3, 2)
    before = classifier.weight.detach().clone()
    x, t = torch.randn(8, 3), torch.eye(2)[torch.arange(8) % 2]
    with pytest.raises(ValueError, match="epochs and batch_size must be >= 1"):
        fit_box_classifier(classifier, x, t, epochs=epochs, batch_size=batch_size, lr=0.1)
    assert torch.equal(classifier.weight, before)


def test_mlzsl_tool_refuses_zero_classifier_epochs(tmp_path, load_script):
    tool = load_script("tools/train_mlzsl.py")
    args = tool.default_argument_parser().parse_args(
        ["--config-file", str(REPO / "configs/classification/synthetic.yaml"), "OUTPUT_DIR", str(tmp_path),
         "SYNTHESIS.CLASSIFIER.EPOCHS", "0"])
    with pytest.raises(ValueError, match=r"SYNTHESIS\.CLASSIFIER\.EPOCHS.*got 0"):
        tool.main(args)
    assert not (tmp_path / "classifiers.pth").exists() and not (tmp_path / "results.json").exists()
