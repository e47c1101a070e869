"""Issue 10, detectron2 main vs v0.6: a checkpoint without optimizer state (detectron2 v0.6's
DefaultTrainer) is refused with what to do; main's sigmoid / federated box losses are rejected."""
from pathlib import Path

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform

from zsdet.compat import check_config_supported
from zsdet.config import get_zsdet_cfg
from zsdet.engine import ZSDTrainer
from zsdet.modeling.zsd_predictor import ZSDOutputLayers

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "quick_schedules" / "zsd_shapes_tiny_instant_test.yaml"


def test_checkpoint_without_optimizer_state_is_refused_with_advice(tmp_path):
    cfg = get_zsdet_cfg(str(CONFIG), ["OUTPUT_DIR", str(tmp_path)])
    trainer = ZSDTrainer(cfg)
    trainer.checkpointer.save("model_0000009", iteration=9)
    path = tmp_path / "model_0000009.pth"
    ckpt = torch.load(path, weights_only=False)
    assert "optimizer" in ckpt["trainer"]["_trainer"]  # zsdet saves momentum on every detectron2
    del ckpt["trainer"]["_trainer"]  # what detectron2 v0.6's DefaultTrainer writes
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=f"{path} holds no optimizer state .* Delete .*last_checkpoint"):
        ZSDTrainer(cfg).resume_or_load(resume=True)


@pytest.mark.parametrize("key", ["USE_SIGMOID_CE", "USE_FED_LOSS"])
def test_sigmoid_and_federated_box_losses_are_rejected(key):
    cfg = get_zsdet_cfg(str(CONFIG), [])
    cfg.defrost()
    cfg.MODEL.ROI_BOX_HEAD[key] = True  # detectron2 main's keys (absent from v0.6's defaults)
    with pytest.raises(ValueError, match=f"MODEL.ROI_BOX_HEAD.{key}=True: zsdet's ZSDOutputLayers"):
        check_config_supported(cfg)
    with pytest.raises(ValueError, match=f"MODEL.ROI_BOX_HEAD.{key}=True"):
        ZSDOutputLayers(ShapeSpec(channels=8), box2box_transform=Box2BoxTransform((1, 1, 1, 1)),
                        num_classes=3, **{key.lower(): True})
