"""Every setting of every requested stage is checked before the first stage starts, and every error
names the key and the value given (issue 10, items 10 and 11)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from zsdet.config import get_zsdet_cfg
from zsdet.engine import STAGES, ZSDPipeline

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs/quick_schedules/zsd_shapes_tiny_instant_test.yaml")
SYNTHETIC = str(REPO / "configs/classification/synthetic.yaml")


def tiny_cfg(tmp_path, *opts):
    return get_zsdet_cfg(TINY, ["OUTPUT_DIR", str(tmp_path), *opts])


def key_and_value(key, value):
    """The message must name the key and the value as given."""
    return rf"{re.escape(key)}.*{re.escape(repr(value) if isinstance(value, str) else str(value))}"


@pytest.mark.parametrize("key,value", [
    ("SYNTHESIS.CLF_HEADS", 7),  # with SYNTHESIS.FUSION clf: 256-d box features, found only after detector + bank before
    ("SYNTHESIS.GAN", "wgan"),
    ("SYNTHESIS.LR", -0.1),
    ("SYNTHESIS.VAL_FRACTION", 1.0),
    ("ZSD.CLASSIFIER.BATCH_SIZE", 0),  # was "range() arg 3 must not be zero"
    ("ZSD.CLASSIFIER.EPOCHS", 0),
    ("ZSD.CLASSIFIER.ALIGN_SYNTHESIZED", "histogram"),
    ("ZSD.CLASSIFIER.LOSS", "focal"),
    ("ZSD.CLASSIFIER.UNSEEN_LOGIT_BIAS", -1.0),
    ("ZSD.CLASSIFIER.MIN_SEEN_LOGIT_BIAS", 0.5),  # the lowest seen-logit bias is at most 0
    ("ZSD.CLASSIFIER.MIN_SEEN_LOGIT_BIAS", -2.1),  # off the calibration's 0.25 grid
    ("ZSD.CLASSIFIER.CALIBRATION_REFERENCE", "seen_detector"),
    ("ZSD.CLASSIFIER.SEEN_ROWS", "stage1"),
    ("ZSD.CLASSIFIER.SEEN_DISTILLATION", 1.5),
    ("ZSD.CLASSIFIER.HIDDEN_UNITS", -1),
    ("ZSD.CLASSIFIER.HIDDEN_GROUPS", "unseen"),
    ("ZSD.CLASSIFIER.SEEN_GROUP_LOSS", "focal"),
    ("ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES", -0.5),
    ("ZSD.CLASSIFIER.SEEN_GROUP_FOLDS", -1),
    ("ZSD.CLASSIFIER.SEEN_GROUP_FOLDS", 1),  # one MLP blind to every seen class
    ("ZSD.CLASSIFIER.SEEN_GROUP_FOLDS", 99),  # more folds than seen classes, found only at stage 6 before
    ("ZSD.CLASSIFIER.SEEN_GROUP_ENSEMBLE", 1),
    ("ZSD.CLASSIFIER.ANCHOR_NEAREST", -1),
    ("MODEL.ZSD.SEMANTIC_AUX_WEIGHT", -1.0),
    ("MODEL.ZSD.ZSD_UNSEEN_LOGIT_BIAS", -0.5),
    ("MODEL.ZSD.GZSD_SEEN_THRESH", 1.5),  # every seen probability floored to 0
    ("ZSD.BASELINE.EPOCHS", -1),  # was "expected non-negative integer"
    ("SOLVER.IMS_PER_BATCH", 0),  # detectron2 / fvcore messages named no key
    ("SOLVER.MAX_ITER", 0),
    ("ZSD.MIXTURES.MAX_SET_SIZE", 1),
    ("ZSD.FEATURES.FG_IOU", 1.5),
    ("ZSD.FEATURES.STREAM_MEMORY_MB", 0.0),
    ("ZSD.FEATURES.SAMPLES_PER_EPOCH", -1),
    ("ZSD.MIXTURES.MAX_SET_SIZE", 11),  # > SYNTHESIS.MAX_SET_SIZE (10): mixtures the generator drops
    ("ZSD.TEST_GZSD", "no_such_dataset"),
])
def test_pipeline_checks_every_stage_before_the_first(tmp_path, monkeypatch, key, value):
    ran = []
    for stage in STAGES:
        monkeypatch.setattr(ZSDPipeline, f"run_{stage}", lambda self, s=stage: ran.append(s))
    cfg = tiny_cfg(tmp_path, "SYNTHESIS.FUSION", "clf", key, str(value))
    with pytest.raises(ValueError, match=key_and_value(key, value)):
        ZSDPipeline(cfg).run()
    assert ran == []  # no stage started


def test_valid_pipeline_settings_pass(tmp_path):
    from zsdet.engine.settings_check import check_pipeline_settings

    check_pipeline_settings(tiny_cfg(tmp_path), STAGES)


def test_grouped_loss_is_refused_with_the_suzod_recipe(tmp_path):
    from zsdet.engine.settings_check import check_pipeline_settings

    check_pipeline_settings(tiny_cfg(tmp_path, "ZSD.CLASSIFIER.LOSS", "grouped"), STAGES)
    cfg = tiny_cfg(tmp_path, "ZSD.CLASSIFIER.LOSS", "grouped", "ZSD.CLASSIFIER.RECIPE", "suzod",
                   "ZSD.CLASSIFIER.HIDDEN_UNITS", "0")  # recipe suzod: the linear head
    with pytest.raises(ValueError, match=r"ZSD.CLASSIFIER.LOSS must be 'joint' with ZSD.CLASSIFIER.RECIPE 'suzod'"):
        check_pipeline_settings(cfg, STAGES)


@pytest.mark.parametrize("head", [["ZSD.CLASSIFIER.HIDDEN_UNITS", "16", "ZSD.CLASSIFIER.HIDDEN_GROUPS", "seen"],
                                  ["ZSD.CLASSIFIER.HIDDEN_UNITS", "0"],  # a linear head ignores it
                                  ["ZSD.CLASSIFIER.HIDDEN_UNITS", "16", "ZSD.CLASSIFIER.HIDDEN_GROUPS", "all"]])
def test_seen_group_loss_is_accepted_with_every_head(tmp_path, head):
    from zsdet.engine.settings_check import check_pipeline_settings

    for loss in ("joint", "grouped", "real"):
        check_pipeline_settings(tiny_cfg(tmp_path, "ZSD.CLASSIFIER.SEEN_GROUP_LOSS", loss, *head), STAGES)


def test_unseen_mixtures_need_real_mixtures(tmp_path):
    """The shipped configs have no real mixtures in the box classifier's training set (round 37); synthesized
    unseen label sets are drawn like them, so asking for them alone is refused, naming both keys."""
    from zsdet.engine.settings_check import check_pipeline_settings

    assert tiny_cfg(tmp_path).ZSD.CLASSIFIER.MIXTURE_RATIO == 0.0
    with pytest.raises(ValueError, match=r"ZSD.CLASSIFIER.MIXTURE_RATIO must be > 0 with ZSD.CLASSIFIER.UNSEEN_MIXTURES"
                                         r".*got 0.0"):
        check_pipeline_settings(tiny_cfg(tmp_path, "ZSD.CLASSIFIER.UNSEEN_MIXTURES", "True"), STAGES)
    check_pipeline_settings(tiny_cfg(tmp_path, "ZSD.CLASSIFIER.UNSEEN_MIXTURES", "True",
                                     "ZSD.CLASSIFIER.MIXTURE_RATIO", "0.25"), STAGES)


def test_seen_distillation_is_refused_with_the_suzod_recipe(tmp_path):
    from zsdet.engine.settings_check import check_pipeline_settings

    check_pipeline_settings(tiny_cfg(tmp_path, "ZSD.CLASSIFIER.SEEN_DISTILLATION", "0.5"), STAGES)
    cfg = tiny_cfg(tmp_path, "ZSD.CLASSIFIER.SEEN_DISTILLATION", "0.5", "ZSD.CLASSIFIER.RECIPE", "suzod",
                   "ZSD.CLASSIFIER.HIDDEN_UNITS", "0")
    with pytest.raises(ValueError, match=r"ZSD.CLASSIFIER.RECIPE must be 'joint' with ZSD.CLASSIFIER.SEEN_DISTILLATION"):
        check_pipeline_settings(cfg, STAGES)


@pytest.mark.parametrize("setting,key,value,condition", [
    # the detector's rows are a linear head's
    (("ZSD.CLASSIFIER.HIDDEN_UNITS", "16"), "ZSD.CLASSIFIER.RECIPE", "suzod", "ZSD.CLASSIFIER.HIDDEN_UNITS > 0"),
    (("ZSD.CLASSIFIER.HIDDEN_UNITS", "16"), "ZSD.CLASSIFIER.SEEN_ROWS", "detector", "ZSD.CLASSIFIER.HIDDEN_UNITS > 0"),
    # the negatives train the seen group's MLP alone
    (("ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES", "0.5"), "ZSD.CLASSIFIER.HIDDEN_GROUPS", "all",
     "ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES > 0"),
    (("ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES", "0.5"), "ZSD.CLASSIFIER.HIDDEN_UNITS", "0",
     "ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES > 0"),
    # the folds are the seen group's MLP, trained with the seen group's loss
    (("ZSD.CLASSIFIER.SEEN_GROUP_FOLDS", "2"), "ZSD.CLASSIFIER.HIDDEN_GROUPS", "all",
     "ZSD.CLASSIFIER.SEEN_GROUP_FOLDS > 0"),
    (("ZSD.CLASSIFIER.SEEN_GROUP_FOLDS", "2"), "ZSD.CLASSIFIER.HIDDEN_UNITS", "0",
     "ZSD.CLASSIFIER.SEEN_GROUP_FOLDS > 0"),
    (("ZSD.CLASSIFIER.SEEN_GROUP_FOLDS", "2"), "ZSD.CLASSIFIER.SEEN_GROUP_LOSS", "joint",
     "ZSD.CLASSIFIER.SEEN_GROUP_FOLDS > 0"),
    (("ZSD.CLASSIFIER.SEEN_GROUP_ENSEMBLE", "3"), "ZSD.CLASSIFIER.HIDDEN_UNITS", "0",
     "ZSD.CLASSIFIER.SEEN_GROUP_ENSEMBLE > 0"),
    (("ZSD.CLASSIFIER.SEEN_GROUP_ENSEMBLE", "3"), "ZSD.CLASSIFIER.SEEN_GROUP_FOLDS", "2",
     "ZSD.CLASSIFIER.SEEN_GROUP_ENSEMBLE > 0"),  # one way of making the seen group's MLPs
])
def test_a_setting_is_refused_without_the_head_it_needs(tmp_path, setting, key, value, condition):
    """Accepted with the base config's head; with ``key`` set to ``value`` refused, naming both keys."""
    from zsdet.engine.settings_check import check_pipeline_settings

    check_pipeline_settings(tiny_cfg(tmp_path, *setting), STAGES)
    with pytest.raises(ValueError, match=rf"{re.escape(key)} must be .* with {re.escape(condition)}"):
        check_pipeline_settings(tiny_cfg(tmp_path, *setting, key, value), STAGES)


def test_only_requested_stages_are_checked(tmp_path):
    from zsdet.engine.settings_check import check_pipeline_settings

    cfg = tiny_cfg(tmp_path, "ZSD.BASELINE.EPOCHS", "0")
    check_pipeline_settings(cfg, ["detector", "features", "generator", "classifier", "evaluate"])
    with pytest.raises(ValueError, match=key_and_value("ZSD.BASELINE.EPOCHS", 0)):
        check_pipeline_settings(cfg, ["baseline"])


def mlzsl_cfg(tmp_path, *opts):
    return get_zsdet_cfg(SYNTHETIC, ["OUTPUT_DIR", str(tmp_path), *opts])


@pytest.mark.parametrize("key,value", [
    ("SYNTHESIS.CLASSIFIER.BATCH_SIZE", 0),  # was "range() arg 3 must not be zero"
    ("SYNTHESIS.CLASSIFIER.BATCH_SIZE", -3),  # was "batch_size must be >= 1, got 0"
    ("SYNTHESIS.CLASSIFIER.EPOCHS", 0),
    ("SYNTHESIS.CLASSIFIER.LR", 0.0),
    ("SYNTHESIS.CRITIC_ITERS", 0),
    ("SYNTHESIS.FUSION", "xlf"),
    ("SYNTHESIS.LABEL_SAMPLING.ROUNDS", 0),
    ("MLZSL.STREAM_BLOCK_ROWS", 0),
    ("MLZSL.SYNTHETIC.NUM_SEEN", 0),
])
def test_classification_settings_name_key_and_value(tmp_path, key, value):
    from zsdet.engine.settings_check import check_classification_settings

    with pytest.raises(ValueError, match=key_and_value(key, value)):
        check_classification_settings(mlzsl_cfg(tmp_path, key, str(value)))


def test_classification_settings_checked_before_any_work(tmp_path, load_script):
    """The tool fails before the synthetic data is generated, the generator trained or a result written."""
    tool = load_script("tools/train_mlzsl.py")
    args = tool.default_argument_parser().parse_args(
        ["--config-file", SYNTHETIC, "OUTPUT_DIR", str(tmp_path), "SYNTHESIS.CLASSIFIER.BATCH_SIZE", "0"])
    with pytest.raises(ValueError, match=key_and_value("SYNTHESIS.CLASSIFIER.BATCH_SIZE", 0)):
        tool.main(args)
    assert not (tmp_path / "synthetic_data").exists() and not (tmp_path / "results.json").exists()


def test_train_net_reports_a_bad_setting_in_one_line_before_training(tmp_path):
    """The tool itself: exit status 1, one line naming key and value, no stack trace, nothing trained."""
    env = dict(os.environ, OMP_NUM_THREADS="1", DETECTRON2_DATASETS=str(tmp_path / "datasets"))
    proc = subprocess.run([sys.executable, str(REPO / "tools/train_net.py"), "--config-file", TINY,
                           "OUTPUT_DIR", str(tmp_path / "out"), "SYNTHESIS.FUSION", "clf", "SYNTHESIS.CLF_HEADS", "7"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert re.fullmatch(r"error: SYNTHESIS\.CLF_HEADS .*got 7", proc.stderr.strip().splitlines()[-1])
    assert not (tmp_path / "out" / "model_final.pth").exists()
    assert not (tmp_path / "datasets").exists()  # not even the training images were generated


def test_eval_only_checks_the_settings_before_evaluating(tmp_path, load_script, monkeypatch):
    """issue 17, item 9: ``tools/train_net.py --eval-only`` runs the up-front check too."""
    tool = load_script("tools/train_net.py")
    evaluated = []
    monkeypatch.setattr(ZSDPipeline, "evaluate_and_report", lambda self, methods: evaluated.append(methods))
    weights, missing = tmp_path / "model_zsd.pth", str(tmp_path / "missing.pth")
    weights.write_bytes(b"")
    for opts, key, value in (([str(weights), "TEST.DETECTIONS_PER_IMAGE", "0"], "TEST.DETECTIONS_PER_IMAGE", 0),
                             ([str(weights), "ZSD.TEST_ZSD", "no_such_dataset"], "ZSD.TEST_ZSD", "no_such_dataset"),
                             ([missing], "MODEL.WEIGHTS", missing)):
        args = tool.build_parser().parse_args(["--config-file", TINY, "--eval-only", "OUTPUT_DIR",
                                               str(tmp_path / "out"), "MODEL.WEIGHTS", *opts])
        with pytest.raises(ValueError, match=key_and_value(key, value)):
            tool.main(args)
    assert evaluated == []
