"""add_zsdet_config: defaults, YAML merge with _BASE_, clear errors for bad keys and types."""
from pathlib import Path

import pytest
import yaml
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import zsdet

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def zsdet_cfg():
    cfg = get_cfg()
    zsdet.add_zsdet_config(cfg)
    return cfg


def test_defaults_present():
    cfg = zsdet_cfg()
    assert cfg.MODEL.ZSD.MODE == "gzsd"
    assert cfg.ZSD.FEATURES.FG_IOU == 0.6 and cfg.ZSD.FEATURES.BG_IOU == 0.3
    assert cfg.SYNTHESIS.FUSION == "clf"
    assert "MLZSL" in cfg


def test_every_key_documented():
    source = (Path(zsdet.__file__).parent / "config.py").read_text()
    for line in source.splitlines():
        stripped = line.strip()
        if "=" in stripped and stripped[:2] in ("s.", "z.", "p.", "m.") and "CN()" not in stripped:
            assert "#" in stripped, f"config key without a comment: {stripped}"


def test_yaml_merge_with_base(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"ZSD": {"FEATURES": {"BG_PER_FG": 7.0}}, "MODEL": {"ZSD": {"MODE": "zsd"}}}))
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text(yaml.safe_dump({"_BASE_": "base.yaml", "ZSD": {"MIXTURES": {"RATIO": 0.1}}}))
    cfg = zsdet_cfg()
    cfg.merge_from_file(str(leaf))
    assert cfg.ZSD.FEATURES.BG_PER_FG == 7.0
    assert cfg.MODEL.ZSD.MODE == "zsd"
    assert cfg.ZSD.MIXTURES.RATIO == 0.1


def test_unknown_key_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"ZSD": {"FEATURES": {"FG_IOUU": 0.5}}}))
    with pytest.raises(KeyError, match="ZSD.FEATURES.FG_IOUU"):
        zsdet_cfg().merge_from_file(str(bad))


def test_wrong_type_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"ZSD": {"FEATURES": {"FLUSH_EVERY": "many"}}}))
    with pytest.raises(ValueError, match="ZSD.FEATURES.FLUSH_EVERY"):
        zsdet_cfg().merge_from_file(str(bad))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_shipped_config_loads(path):
    """Every YAML parses; every detection YAML builds its model on the CPU."""
    cfg = zsdet_cfg()
    cfg.merge_from_file(str(path))
    if path.parent.name == "classification":
        return
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = min(cfg.MODEL.RESNETS.DEPTH, 50)  # same code path, less memory/time
    model = build_model(cfg)
    predictor = model.roi_heads.box_predictor
    assert predictor.cls_score.out_features == cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1
    if cfg.DATASETS.TRAIN:  # leaves name a ZSD training set; the split comes from its metadata
        assert int(predictor.unseen_mask.sum()) > 0
