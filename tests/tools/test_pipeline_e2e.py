"""End-to-end smoke run of tools/train_net.py on the tiny shapes split (every stage), then resume,
--eval-only, and the retrained classifier's effect on the detector's predictions."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

import zsdet
from zsdet.data.zsd_split import ZeroShotSplit
from zsdet.engine import load_detector_weights
from zsdet.engine.checkpoints import weights_classifier_kind

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
    c = cfg_for(out).ZSD.CLASSIFIER
    assert set(metrics["synthesis"]) == ({"zsd", "gzsd", "feature_quality"}
                                         | ({"gzsd_calibration"} if c.SEEN_ACCURACY_BUDGET > 0 else set())
                                         | ({"alignment"} if c.ALIGN_SYNTHESIZED != "none" else set())
                                         | ({"anchoring"} if c.ANCHOR_SYNTHESIZED else set())
                                         | ({"seen_group_negatives"} if c.SEEN_GROUP_NEGATIVES > 0 else set()))
    if c.ALIGN_SYNTHESIZED != "none":
        assert 0 <= metrics["synthesis"]["alignment"]["real_vs_synth_acc_after"] <= 1
    assert set(metrics["baseline"]) == {"zsd", "gzsd"}
    for method in metrics.values():
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
    synthesis = json.loads((out / "metrics.json").read_text())["synthesis"]
    assert metrics["eval"] == {k: synthesis[k] for k in ("zsd", "gzsd")}  # the figures of the same weights
    assert "eval" in log


def test_retrained_classifier_changes_predictions(run_dir):
    out, _ = run_dir
    image = cv2.imread(DatasetCatalog.get("zsd_shapes_tiny_test_gzsd")[0]["file_name"])
    outputs = {}
    for name, weights, mode in (("seen", "model_final.pth", "seen"), ("zsd", "model_zsd.pth", "zsd"),
                                ("gzsd", "model_zsd.pth", "gzsd")):
        cfg = cfg_for(out, MODE=mode, CLASSIFIER=weights_classifier_kind(str(out / weights), "linear"))
        predictor = DefaultPredictor(cfg)  # builds the model; weights loaded with zsdet's checks
        load_detector_weights(predictor.model, str(out / weights))
        outputs[name] = predictor(image)["instances"]
    model_zsd = build_model(cfg_for(out, CLASSIFIER=weights_classifier_kind(str(out / "model_zsd.pth"), "linear")))
    load_detector_weights(model_zsd, str(out / "model_zsd.pth"))
    seen_state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    prefix = "roi_heads.box_predictor.cls_score."
    retrained = model_zsd.state_dict()
    key = prefix + ("linear.weight" if prefix + "linear.weight" in retrained else "weight")  # the linear part
    assert not torch.equal(retrained[key], seen_state[prefix + "weight"])
    unseen = set(model_zsd.roi_heads.box_predictor.unseen_mask.nonzero().flatten().tolist())
    assert set(outputs["seen"].pred_classes.tolist()).isdisjoint(unseen)
    assert set(outputs["zsd"].pred_classes.tolist()) <= unseen
    assert len(outputs["zsd"]) > 0, "the retrained classifier must score unseen classes"
    assert os.path.getsize(out / "model_zsd.pth") > 0


def test_feature_quality_is_reported(run_dir):
    out, log = run_dir
    quality = json.loads((out / "metrics.json").read_text())["synthesis"]["feature_quality"]
    assert set(quality) == {"spread_ratio", "real_vs_synth_acc", "tstr_ap", "zeros_real", "zeros_synth", "num_real"}
    assert 0.0 <= quality["real_vs_synth_acc"] <= 1.0 and quality["num_real"] > 0 and quality["spread_ratio"] >= 0
    assert (out / "generator" / "feature_quality.png").stat().st_size > 1000
    assert "real-vs-synth probe acc" in log  # printed under the results table


def test_suzod_recipe_and_unseen_mixtures(run_dir):
    """RECIPE suzod keeps the detector's seen rows, trains the unseen rows and blends background;
    UNSEEN_MIXTURES adds multi-label sets with unseen classes."""
    from zsdet.engine.checkpoints import CLASSIFIER_PREFIX
    from zsdet.engine.roi_stages import foreground_rows, load_bank, load_generator
    from zsdet.engine.synthesis_classifier import train_synthesis_classifier, unseen_mixture_sets
    from zsdet.synthesis import LabelSets

    out, _ = run_dir
    cfg = cfg_for(out)
    cfg.ZSD.CLASSIFIER.RECIPE, cfg.ZSD.CLASSIFIER.UNSEEN_MIXTURES = "suzod", True
    cfg.ZSD.CLASSIFIER.MIXTURE_RATIO = 0.25  # the paper's real mixtures: unseen sets are drawn like them
    cfg.ZSD.CLASSIFIER.SEEN_ACCURACY_BUDGET = 0.0
    split = ZeroShotSplit.from_dataset(cfg.DATASETS.TRAIN[0])
    bank = load_bank(str(out / "roi_bank"), split, cfg.DATASETS.TRAIN[0])
    trainer = load_generator(cfg, split.class_names, bank.feature_dim, str(out / "generator"))
    _, val_rows = foreground_rows(cfg, bank, split.seen_ids)
    classifier, record = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids,
                                                    np.unique(bank.image_ids[val_rows]), str(out / "model_final.pth"))
    detector = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    w = detector[CLASSIFIER_PREFIX + "weight"]
    seen, unseen = list(split.seen_ids), list(split.unseen_ids)
    assert torch.equal(classifier.weight[seen], w[seen])
    assert not torch.equal(classifier.weight[unseen], w[unseen]) and not torch.equal(classifier.weight[-1], w[-1])
    assert record["recipe"] == "suzod" and record["synthesized_sets"] > 0
    real = LabelSets.from_lists([[seen[0], seen[1]], [seen[2]], [seen[1], seen[3], seen[4]]] * 4, split.num_classes)
    sets = unseen_mixture_sets(cfg, real, trainer.generator.class_embeddings, seen, unseen, 50, seed=0)
    multi_hot = sets.to_multi_hot(split.num_classes)
    assert len(sets) == 50 and bool((multi_hot.sum(1) >= 2).all()) and bool(multi_hot[:, unseen].any(1).all())


def classifier_stage_inputs(run_dir):
    """(cfg without calibration, alignment or anchoring, with a linear head, split, RoI bank, loaded generator,
    validation images) of the e2e run, for calling the classifier stage directly."""
    from zsdet.engine.roi_stages import foreground_rows, load_bank, load_generator

    out, _ = run_dir
    cfg = cfg_for(out)
    cfg.ZSD.CLASSIFIER.SEEN_ACCURACY_BUDGET, cfg.ZSD.CLASSIFIER.ALIGN_SYNTHESIZED = 0.0, "none"
    cfg.ZSD.CLASSIFIER.ANCHOR_SYNTHESIZED = False  # plain synthesized features (the test below anchors them)
    cfg.ZSD.CLASSIFIER.HIDDEN_UNITS = 0  # the linear head the options below act on
    split = ZeroShotSplit.from_dataset(cfg.DATASETS.TRAIN[0])
    bank = load_bank(str(out / "roi_bank"), split, cfg.DATASETS.TRAIN[0])
    trainer = load_generator(cfg, split.class_names, bank.feature_dim, str(out / "generator"))
    _, val_rows = foreground_rows(cfg, bank, split.seen_ids)
    return cfg, split, bank, trainer, np.unique(bank.image_ids[val_rows])


def train_classifier_stage(run_dir, **classifier_keys):
    """(classifier, record) of the classifier stage on the e2e run's inputs with the run's own
    settings (calibration, alignment) and ``ZSD.CLASSIFIER`` keys overridden."""
    from zsdet.engine.synthesis_classifier import train_synthesis_classifier

    out, _ = run_dir
    _, split, bank, trainer, held_out = classifier_stage_inputs(run_dir)
    cfg = cfg_for(out)
    for key, value in classifier_keys.items():
        setattr(cfg.ZSD.CLASSIFIER, key, value)
    return train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out,
                                      str(out / "model_final.pth"))


@pytest.mark.parametrize("method", ["quantile", "zeros"])
def test_alignment_of_synthesized_features(run_dir, method):
    """ALIGN_SYNTHESIZED fits on the real training foreground, reports the probe before / after on
    the validation images' seen RoIs, and changes the unseen columns only through the synthesized
    features (the real rows and the seed are the same)."""
    from zsdet.engine.synthesis_classifier import train_synthesis_classifier

    cfg, split, bank, trainer, held_out = classifier_stage_inputs(run_dir)
    plain, plain_record = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out)
    cfg.ZSD.CLASSIFIER.ALIGN_SYNTHESIZED = method
    aligned, record = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out)
    a = record["alignment"]
    assert "alignment" not in plain_record and a["method"] == method
    assert a["fit_rows"] > 0 and a["probe_rows"] >= 4
    assert 0 <= a["real_vs_synth_acc_after"] <= 1 and 0 <= a["real_vs_synth_acc_before"] <= 1
    assert 0 < a["zeros_real"] < 1  # post-ReLU box-head features
    if method == "zeros":  # the sigmoid generator's zeros come only from the alignment, near the real share
        assert abs(a["zeros_after"] - a["zeros_real"]) < 0.1
    assert record["real_and_mixed"] == plain_record["real_and_mixed"]
    assert not torch.equal(aligned.weight, plain.weight)


@pytest.mark.parametrize("alignment", ["none", "zeros"])
def test_anchoring_keeps_real_rows_and_moves_the_synthesized_ones(run_dir, alignment):
    """ANCHOR_SYNTHESIZED: the same real rows, synthesized rows replaced by anchored ones (within the
    real range, with exact zeros near the real share, drawn from nearest seen classes), recorded;
    the same settings give the same classifier."""
    from zsdet.engine.synthesis_classifier import train_synthesis_classifier

    cfg, split, bank, trainer, held_out = classifier_stage_inputs(run_dir)
    cfg.ZSD.CLASSIFIER.ALIGN_SYNTHESIZED = alignment
    plain, plain_record = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out)
    c = cfg.ZSD.CLASSIFIER
    c.ANCHOR_SYNTHESIZED, c.ANCHOR_NEAREST, c.ANCHOR_ZEROS = True, 1, False  # the zero share below
    anchored, record = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out)
    again, _ = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out)
    a = record["anchoring"]
    assert "anchoring" not in plain_record and a["nearest"] == 1
    assert a["rows"] == record["synthesized_single"] + record["synthesized_sets"] and a["real_rows"] > 0
    assert 1 <= a["anchor_classes"] <= len(split.unseen_ids)  # one nearest seen class per unseen class
    assert 0 < a["zeros_anchored"] < 1 and 0 < a["zeros_real"] < 1
    assert a["probe_rows"] >= 4 and 0 <= a["real_vs_anchored_acc"] <= 1
    assert record["real_and_mixed"] == plain_record["real_and_mixed"]
    assert not torch.equal(anchored.weight, plain.weight)
    assert torch.equal(anchored.weight, again.weight)
    cfg.ZSD.CLASSIFIER.ANCHOR_ZEROS = True  # the real share of exact zeros, on the same anchored rows
    _, matched = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out)
    m = matched["anchoring"]
    assert m["zeros_matched"] and not a["zeros_matched"]
    assert abs(m["zeros_anchored"] - m["zeros_real"]) < abs(a["zeros_anchored"] - a["zeros_real"])


def test_grouped_loss_trains_the_groups_grouped_scoring_uses(run_dir):
    """LOSS grouped: on the same training rows, synthesized unseen features become background to the
    seen group of grouped scoring (a lower seen probability than after joint training)."""
    from zsdet.engine.roi_stages import synthesized_set
    from zsdet.engine.synthesis_classifier import train_synthesis_classifier
    from zsdet.modeling.zsd_predictor import gzsd_probs

    cfg, split, bank, trainer, held_out = classifier_stage_inputs(run_dir)
    syn_x, _ = synthesized_set(trainer, split.unseen_ids, cfg.SYNTHESIS.NUM_PER_CLASS, cfg.SEED)
    unseen_mask = torch.zeros(split.num_classes + 1, dtype=torch.bool)
    unseen_mask[list(split.unseen_ids)] = True
    seen_probability = {}
    for loss in ("joint", "grouped"):
        cfg.ZSD.CLASSIFIER.LOSS = loss
        classifier, record = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out)
        assert record["loss"] == loss
        with torch.no_grad():
            probs = gzsd_probs(classifier(syn_x), unseen_mask.clone(), "grouped", 0.0, 0.0)
        seen_probability[loss] = float(probs[:, list(split.seen_ids)].sum(1).mean())
    assert seen_probability["grouped"] < seen_probability["joint"], seen_probability


def test_seen_group_loss_trains_the_seen_groups_mlp_alone(run_dir):
    """SEEN_GROUP_LOSS grouped (HIDDEN_GROUPS seen): the linear head is the one the joint loss trains
    (same rows and seed), the MLP that gives the seen group changes, and under grouped scoring the
    synthesized unseen features get a lower seen probability from it."""
    from zsdet.engine.roi_stages import synthesized_set
    from zsdet.engine.synthesis_classifier import train_synthesis_classifier
    from zsdet.modeling.zsd_predictor import gzsd_probs

    cfg, split, bank, trainer, held_out = classifier_stage_inputs(run_dir)
    cfg.ZSD.CLASSIFIER.HIDDEN_UNITS, cfg.ZSD.CLASSIFIER.HIDDEN_GROUPS = 16, "seen"
    syn_x, _ = synthesized_set(trainer, split.unseen_ids, cfg.SYNTHESIS.NUM_PER_CLASS, cfg.SEED)
    unseen_mask = torch.zeros(split.num_classes + 1, dtype=torch.bool)
    unseen_mask[list(split.unseen_ids)] = True
    heads, seen_probability = {}, {}
    for loss in ("joint", "grouped"):
        cfg.ZSD.CLASSIFIER.SEEN_GROUP_LOSS = loss
        heads[loss], record = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids,
                                                         held_out)
        assert record["seen_group_loss"] == loss and record["hidden_groups"] == "seen"
        with torch.no_grad():
            probs = gzsd_probs(heads[loss](syn_x), unseen_mask.clone(), "grouped", 0.0, 0.0)
        seen_probability[loss] = float(probs[:, list(split.seen_ids)].sum(1).mean())
    assert torch.equal(heads["joint"].linear.weight, heads["grouped"].linear.weight)
    assert not torch.equal(heads["joint"].mlp.hidden.weight, heads["grouped"].mlp.hidden.weight)
    assert seen_probability["grouped"] < seen_probability["joint"], seen_probability


def test_seen_group_loss_real_keeps_every_synthesized_row_from_the_seen_groups_mlp(run_dir):
    """SEEN_GROUP_LOSS real: the linear head is the grouped loss's (same rows and seed), and the MLP that gives
    the seen group is the same whatever is synthesized (another number of unseen rows), where the grouped
    loss's MLP changes with them."""
    from zsdet.engine.synthesis_classifier import train_synthesis_classifier

    cfg, split, bank, trainer, held_out = classifier_stage_inputs(run_dir)
    cfg.ZSD.CLASSIFIER.HIDDEN_UNITS, cfg.ZSD.CLASSIFIER.HIDDEN_GROUPS = 16, "seen"
    heads, full, half = {}, cfg.SYNTHESIS.NUM_PER_CLASS, cfg.SYNTHESIS.NUM_PER_CLASS // 2
    for loss in ("grouped", "real"):
        for per_class in (full, half):
            cfg.ZSD.CLASSIFIER.SEEN_GROUP_LOSS, cfg.SYNTHESIS.NUM_PER_CLASS = loss, per_class
            heads[loss, per_class], record = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids,
                                                                        split.unseen_ids, held_out)
            assert record["seen_group_loss"] == loss
    assert torch.equal(heads["grouped", full].linear.weight, heads["real", full].linear.weight)
    assert torch.equal(heads["real", full].mlp.hidden.weight, heads["real", half].mlp.hidden.weight)
    assert not torch.equal(heads["grouped", full].mlp.hidden.weight, heads["grouped", half].mlp.hidden.weight)
    assert not torch.equal(heads["grouped", full].mlp.hidden.weight, heads["real", full].mlp.hidden.weight)


def test_seen_group_negatives_train_the_seen_groups_mlp_alone(run_dir):
    """SEEN_GROUP_NEGATIVES (HIDDEN_GROUPS seen): the linear head is unchanged (same rows and seed), the MLP
    that gives the seen group is trained on the extra background rows too and gives real mixtures of
    seen classes a lower seen probability under grouped scoring."""
    from zsdet.engine.synthesis_classifier import seen_group_negatives, train_synthesis_classifier
    from zsdet.engine.roi_stages import real_training_set
    from zsdet.modeling.zsd_predictor import gzsd_probs

    cfg, split, bank, trainer, held_out = classifier_stage_inputs(run_dir)
    cfg.ZSD.CLASSIFIER.HIDDEN_UNITS, cfg.ZSD.CLASSIFIER.HIDDEN_GROUPS = 16, "seen"
    cfg.ZSD.CLASSIFIER.SEEN_GROUP_LOSS = "grouped"
    heads, records = {}, {}
    for ratio in (0.0, 1.0):
        cfg.ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES = ratio
        heads[ratio], records[ratio] = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids,
                                                                  split.unseen_ids, held_out)
    assert "seen_group_negatives" not in records[0.0]
    negatives = records[1.0]["seen_group_negatives"]
    assert negatives["rows"] > 0
    assert records[1.0]["training"] == records[0.0]["training"]
    assert torch.equal(heads[0.0].linear.weight, heads[1.0].linear.weight)
    assert not torch.equal(heads[0.0].mlp.hidden.weight, heads[1.0].mlp.hidden.weight)
    cfg.SEED += 1  # fresh mixtures, not the trained ones
    x, y = real_training_set(cfg, bank, split.seen_ids, np.random.default_rng(cfg.SEED), with_mixtures=False,
                             held_out_images=held_out)
    fresh, _, _ = seen_group_negatives(cfg, x, y)
    unseen_mask = torch.zeros(split.num_classes + 1, dtype=torch.bool)
    unseen_mask[list(split.unseen_ids)] = True
    seen_probability = {}
    with torch.no_grad():
        for ratio, head in heads.items():
            probs = gzsd_probs(head(fresh), unseen_mask.clone(), "grouped", 0.0, 0.0)
            seen_probability[ratio] = float(probs[:, list(split.seen_ids)].sum(1).mean())
    assert seen_probability[1.0] < seen_probability[0.0] - 0.05, seen_probability


def test_unseen_logit_bias_is_folded_and_counts_against_the_budget(run_dir):
    """UNSEEN_LOGIT_BIAS u adds u to the unseen rows' biases of the same trained classifier (nothing
    else changes), and the calibration's budget counts from the classifier before u."""
    from zsdet.engine.synthesis_classifier import train_synthesis_classifier

    cfg, split, bank, trainer, held_out = classifier_stage_inputs(run_dir)
    cfg.ZSD.CLASSIFIER.CALIBRATION_REFERENCE = "classifier"  # the budget's reference under test here
    unseen, others = list(split.unseen_ids), [*split.seen_ids, split.num_classes]
    trained = {}
    for budget, bias in ((0.0, 0.0), (0.0, 3.0), (5.0, 0.0), (5.0, 3.0)):
        cfg.ZSD.CLASSIFIER.SEEN_ACCURACY_BUDGET, cfg.ZSD.CLASSIFIER.UNSEEN_LOGIT_BIAS = budget, bias
        trained[budget, bias] = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids,
                                                           held_out)
    (plain, plain_record), (biased, record) = trained[0.0, 0.0], trained[0.0, 3.0]
    assert "unseen_logit_bias" not in plain_record and record["unseen_logit_bias"] == 3.0
    assert torch.equal(biased.weight, plain.weight) and torch.equal(biased.bias[others], plain.bias[others])
    torch.testing.assert_close(biased.bias[unseen], plain.bias[unseen] + 3.0)
    calibrated, calibrated_biased = trained[5.0, 0.0][1]["gzsd_calibration"], trained[5.0, 3.0][1]["gzsd_calibration"]
    assert calibrated_biased["reference_top1"] == calibrated["seen_top1_at_0"] == calibrated["reference_top1"]
    assert calibrated_biased["seen_top1"] >= calibrated_biased["reference_top1"] - 5.0 or \
        calibrated_biased["seen_logit_bias"] == 0.0
    assert calibrated_biased["seen_logit_bias"] <= calibrated["seen_logit_bias"]


def test_calibration_can_count_from_the_seen_detector(run_dir):
    """CALIBRATION_REFERENCE detector: the budget counts from the stage-1 detector's seen top-1 on the
    calibration RoIs, and the chosen bias keeps the retrained classifier within it where the grid can."""
    from zsdet.engine.checkpoints import CLASSIFIER_PREFIX, load_state_dict_file
    from zsdet.engine.gzsd_calibration import detector_logits, top1_accuracy
    from zsdet.engine.synthesis_classifier import train_synthesis_classifier

    out, _ = run_dir
    cfg, split, bank, trainer, held_out = classifier_stage_inputs(run_dir)
    cfg.ZSD.CLASSIFIER.SEEN_ACCURACY_BUDGET, cfg.ZSD.CLASSIFIER.CALIBRATION_REFERENCE = 5.0, "detector"
    weights = str(out / "model_final.pth")
    with pytest.raises(ValueError, match="CALIBRATION_REFERENCE"):
        train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out)
    _, record = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out, weights)
    choice = record["gzsd_calibration"]
    # the same RoIs the calibration drew: recompute the detector's top-1 on every held-out seen RoI it could use
    rows = np.nonzero(np.isin(bank.image_ids, held_out) & np.isin(bank.labels, split.seen_ids))[0]
    assert choice["num_rois"] == min(len(rows), cfg.SYNTHESIS.VAL_MAX_SAMPLES) and choice["reference"] == "detector"
    if choice["num_rois"] == len(rows):
        unseen_mask = torch.zeros(split.num_classes + 1, dtype=torch.bool)
        unseen_mask[list(split.unseen_ids)] = True
        state = load_state_dict_file(weights)
        logits = detector_logits(state[CLASSIFIER_PREFIX + "weight"], state[CLASSIFIER_PREFIX + "bias"],
                                 torch.from_numpy(bank.load(rows)), split.num_classes + 1, split.unseen_ids)
        z = cfg.MODEL.ZSD
        assert choice["reference_top1"] == top1_accuracy(logits, torch.from_numpy(bank.labels[rows].astype(np.int64)),
                                                         unseen_mask, z.GZSD_SCORING, z.GZSD_SEEN_THRESH, 0.0)
    assert choice["within_budget"] == (choice["seen_top1"] >= choice["reference_top1"] - 5.0)
    assert choice["lowest_bias"] == cfg.ZSD.CLASSIFIER.MIN_SEEN_LOGIT_BIAS
    assert choice["within_budget"] or choice["seen_logit_bias"] == choice["lowest_bias"]
    where = choice["seen_rois"]  # the same RoIs at the chosen bias: own class is the calibrated top-1
    assert where["own"] == pytest.approx(choice["seen_top1"])
    assert sum(where[k] for k in ("own", "other_seen", "unseen", "none")) == pytest.approx(100.0)
    assert 0.0 <= choice["reference_seen_columns_top1"] <= 100.0


def test_seen_rows_from_the_detector(run_dir):
    """SEEN_ROWS detector: on the bank's features every seen logit minus the background logit is the
    stage-1 detector's, and the unseen and background rows are those of the same retrained classifier."""
    from zsdet.engine.checkpoints import CLASSIFIER_PREFIX, load_state_dict_file
    from zsdet.engine.synthesis_classifier import train_synthesis_classifier

    out, _ = run_dir
    cfg, split, bank, trainer, held_out = classifier_stage_inputs(run_dir)
    weights = str(out / "model_final.pth")
    plain, _ = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out, weights)
    cfg.ZSD.CLASSIFIER.SEEN_ROWS = "detector"
    with pytest.raises(ValueError, match="SEEN_ROWS"):
        train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out)
    rebuilt, record = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out, weights)
    assert record["seen_rows"] == "detector"
    others = [*split.unseen_ids, split.num_classes]
    assert torch.equal(rebuilt.weight[others], plain.weight[others]) and torch.equal(rebuilt.bias[others], plain.bias[others])
    state = load_state_dict_file(weights)
    x = torch.from_numpy(bank.load(np.arange(min(len(bank), 200))))
    detector = x @ state[CLASSIFIER_PREFIX + "weight"].T + state[CLASSIFIER_PREFIX + "bias"]
    seen = list(split.seen_ids)
    with torch.no_grad():
        logits = rebuilt(x)
    torch.testing.assert_close(logits[:, seen] - logits[:, -1:], detector[:, seen] - detector[:, -1:],
                               rtol=1e-4, atol=1e-3)


def test_seen_distillation_brings_the_seen_group_towards_the_detector(run_dir):
    """SEEN_DISTILLATION 1: on the validation images' real RoIs (never trained on) the retrained
    classifier's softmax over seen classes and background is closer (KL) to the stage-1 detector's
    than without it; without the detector's weights it fails before training, naming the key."""
    from zsdet.engine.checkpoints import CLASSIFIER_PREFIX, load_state_dict_file
    from zsdet.engine.gzsd_calibration import detector_logits
    from zsdet.engine.synthesis_classifier import train_synthesis_classifier

    out, _ = run_dir
    cfg, split, bank, trainer, held_out = classifier_stage_inputs(run_dir)
    weights = str(out / "model_final.pth")
    cfg.ZSD.CLASSIFIER.EPOCHS, cfg.ZSD.CLASSIFIER.LR = 40, 1e-2  # trained to convergence on the tiny bank
    plain, plain_record = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out)
    cfg.ZSD.CLASSIFIER.SEEN_DISTILLATION = 1.0
    with pytest.raises(ValueError, match="SEEN_DISTILLATION"):
        train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out)
    distilled, record = train_synthesis_classifier(cfg, bank, trainer, split.seen_ids, split.unseen_ids, held_out,
                                                   weights)
    assert record["seen_distillation"] == 1.0 and "seen_distillation" not in plain_record
    columns = [*split.seen_ids, split.num_classes]  # the seen group and background
    rows = np.nonzero(np.isin(bank.image_ids, held_out) & np.isin(bank.labels, columns))[0]
    x = torch.from_numpy(bank.load(rows))
    state = load_state_dict_file(weights)
    teacher = torch.log_softmax(detector_logits(state[CLASSIFIER_PREFIX + "weight"], state[CLASSIFIER_PREFIX + "bias"],
                                                x, split.num_classes + 1, split.unseen_ids)[:, columns], 1)

    def kl_to_detector(classifier):
        with torch.no_grad():
            student = torch.log_softmax(classifier(x)[:, columns], 1)
        return float((teacher.exp() * (teacher - student)).sum(1).mean())

    assert len(rows) > 0 and kl_to_detector(distilled) < 0.5 * kl_to_detector(plain)


def test_validation_protocol_runs_on_a_bank(run_dir, tmp_path):
    from zsdet.engine.roi_stages import load_bank
    from zsdet.engine.zsd_validation import pseudo_unseen_split, run_protocol

    out, _ = run_dir
    cfg = cfg_for(out)
    cfg.SYNTHESIS.EPOCHS, cfg.SYNTHESIS.BATCH_SIZE, cfg.SYNTHESIS.CRITIC_ITERS = 2, 8, 2
    split = ZeroShotSplit.from_dataset(cfg.DATASETS.TRAIN[0])
    bank = load_bank(str(out / "roi_bank"), split, cfg.DATASETS.TRAIN[0])
    pseudo = pseudo_unseen_split(bank, split, 3, 0, 0.25, 0.2)
    again = pseudo_unseen_split(bank, split, 3, 0, 0.25, 0.2)  # a function of the split seed
    assert again.pseudo_unseen_ids == pseudo.pseudo_unseen_ids
    assert np.array_equal(again.validation_images, pseudo.validation_images)
    assert not set(pseudo.pseudo_unseen_ids) & set(pseudo.seen_ids) and len(pseudo.pseudo_unseen_ids) == 3
    assert not set(pseudo.validation_images) & set(pseudo.generator_validation_images)
    results = run_protocol(cfg, bank, split, pseudo, str(tmp_path), str(out / "model_final.pth"), score_epochs=[0])
    assert [r["epoch"] for r in results] == [0, "selected"]
    for r in results:
        assert 0 <= r["pzsd_map"] <= 100 and 0 <= r["top1_unseen_as_seen"] <= 100
        assert 0 <= r["pseudo_unseen_quality"]["real_vs_synth_acc"] <= 1


@pytest.mark.parametrize("groups,kind,module,hidden_key,negatives,folds", [
    ("all", "mlp", "MLPBoxClassifier", "hidden.weight", "0.0", "0"),
    ("seen", "seen_mlp", "SeenGroupMLPClassifier", "mlp.hidden.weight", "0.5", "0"),
    ("seen", "seen_mlp", "SeenGroupMLPClassifier", "mlp.members.1.hidden.weight", "0.0", "2"),
])
def test_mlp_box_classifier_is_trained_calibrated_and_evaluated(run_dir, tmp_path, groups, kind, module, hidden_key,
                                                                negatives, folds):
    """ZSD.CLASSIFIER.HIDDEN_UNITS > 0: the classifier stage, on the e2e run's detector, bank and
    generator, trains an MLP head (with HIDDEN_GROUPS seen: and a linear one, here with
    SEEN_GROUP_NEGATIVES, recorded in metrics.json, or with the seen group's MLP as SEEN_GROUP_FOLDS
    leave-out MLPs), folds the calibration into it, and the pipeline evaluates it as MODEL.ZSD.CLASSIFIER
    mlp / seen_mlp; --eval-only with those keys gives the same figures, and a linear head (or another
    number of folds) asked for by mistake is refused by name."""
    import shutil

    out, _ = run_dir
    for name in ("model_final.pth", "roi_bank", "generator"):
        (shutil.copytree if (out / name).is_dir() else shutil.copy)(out / name, tmp_path / name)
    keys = ["ZSD.CLASSIFIER.HIDDEN_UNITS", "16", "ZSD.CLASSIFIER.HIDDEN_GROUPS", groups,
            "ZSD.CLASSIFIER.SEEN_GROUP_NEGATIVES", negatives, "ZSD.CLASSIFIER.SEEN_GROUP_LOSS", "grouped",
            "ZSD.CLASSIFIER.SEEN_GROUP_FOLDS", folds]
    train_net(tmp_path, *keys)
    ckpt = torch.load(tmp_path / "model_zsd.pth", map_location="cpu", weights_only=True)
    assert ckpt["classifier_type"] == module and ckpt["classifier_record"]["hidden_units"] == 16
    assert ckpt["model"]["roi_heads.box_predictor.cls_score." + hidden_key].shape[0] == 16
    if groups == "seen":  # its linear head is the one a linear run trains (same rows and seed)
        linear, _ = train_classifier_stage(run_dir, HIDDEN_UNITS=0)
        prefix = "roi_heads.box_predictor.cls_score."
        assert torch.equal(ckpt["model"][prefix + "linear.weight"], linear.weight)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["synthesis"]
    if cfg_for(out).ZSD.CLASSIFIER.SEEN_ACCURACY_BUDGET > 0:
        assert "seen_logit_bias" in metrics["gzsd_calibration"]
    assert ("seen_group_negatives" in metrics) == (float(negatives) > 0)
    if float(negatives) > 0:
        assert metrics["seen_group_negatives"]["rows"] > 0
        assert ckpt["classifier_record"]["seen_group_negatives"] == metrics["seen_group_negatives"]
    train_net(tmp_path / "eval_only", "--eval-only", "MODEL.WEIGHTS", str(tmp_path / "model_zsd.pth"),
              "MODEL.ZSD.CLASSIFIER", kind, *keys)
    again = json.loads((tmp_path / "eval_only" / "metrics.json").read_text())["eval"]
    assert again == {k: metrics[k] for k in ("zsd", "gzsd")}
    with pytest.raises(ValueError, match="cls_score.*MODEL.ZSD.CLASSIFIER"):
        load_detector_weights(build_model(cfg_for(out)), str(tmp_path / "model_zsd.pth"))
    if int(folds):
        assert ckpt["classifier_record"]["seen_group_mlps"] == {"members": int(folds), "leave_out": True}
        assert len(ckpt["classifier_record"]["training_mlp"]) == int(folds)
        other = cfg_for(out)
        other.MODEL.ZSD.CLASSIFIER, other.ZSD.CLASSIFIER.HIDDEN_UNITS = kind, 16
        other.ZSD.CLASSIFIER.SEEN_GROUP_FOLDS = int(folds) + 1
        with pytest.raises(ValueError, match=r"cls_score\.mlp\.members\.2.*MODEL.ZSD.CLASSIFIER"):
            load_detector_weights(build_model(other), str(tmp_path / "model_zsd.pth"))
