"""Method presets of configs/dense and the plumbing of benchmarks/zsd_methods.py (stages faked)."""
import json
import os

import pytest

from zsdet.config import get_zsdet_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
METHODS = ["baseline", "single_label", "alf", "flf", "clf_official", "clf"]


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/zsd_methods.py")


def _cfg(method):
    return get_zsdet_cfg(os.path.join(ROOT, "configs", "dense", f"{method}.yaml"))


def test_presets_define_the_method_rows(bench):
    assert list(bench.METHODS) == METHODS
    cfgs = {m: _cfg(m) for m in METHODS}
    assert len({c.OUTPUT_DIR for c in cfgs.values()}) == 6
    for method, cfg in cfgs.items():
        assert cfg.DATASETS.TRAIN == ("zsd_dense_train",) and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 40
        assert cfg.ZSD.STAGES[:2] == ["detector", "features"] and cfg.ZSD.STAGES[-1] == "evaluate"
    assert "baseline" in cfgs["baseline"].ZSD.STAGES and "generator" not in cfgs["baseline"].ZSD.STAGES
    for method in ("alf", "flf", "clf"):
        c = cfgs[method]
        assert c.SYNTHESIS.FUSION == method and "generator" in c.ZSD.STAGES
        assert c.ZSD.MIXTURES.RATIO > 0 and c.ZSD.CLASSIFIER.MIXTURE_RATIO == 0  # round 37: no mixtures in stage 6
    official = cfgs["clf_official"]  # the paper's CLF as the official code builds it
    assert official.SYNTHESIS.FUSION == "clf" and official.SYNTHESIS.OUTPUT_ACTIVATION == "sigmoid"
    assert (official.SYNTHESIS.CLF_INPUT, official.SYNTHESIS.CLF_INIT, official.SYNTHESIS.CLF_DROPOUT) == (
        "activated", "random", 0.1)
    assert official.ZSD.CLASSIFIER.SEEN_ACCURACY_BUDGET == 0 and not official.ZSD.CLASSIFIER.UNSEEN_MIXTURES
    assert official.ZSD.CLASSIFIER.UNSEEN_LOGIT_BIAS == 0 and official.ZSD.CLASSIFIER.BG_PER_FG == 1.0
    assert official.ZSD.CLASSIFIER.MIXTURE_RATIO == 0.25  # the classifier as before: the paper's real mixtures
    single = cfgs["single_label"]
    assert single.ZSD.MIXTURES.RATIO == 0 and single.ZSD.CLASSIFIER.MIXTURE_RATIO == 0
    for row in (official, cfgs["baseline"]):  # the official code's scoring / the plain baseline's
        assert (row.MODEL.ZSD.ZSD_UNSEEN_LOGIT_BIAS, row.MODEL.ZSD.GZSD_SEEN_THRESH) == (0, 0.3)
    # everything before stage 3 is shared, so one detector and RoI bank serve every row (the ZSD bias
    # and the seen floor are scoring settings)
    keys = ("MODEL", "INPUT", "SOLVER", "DATASETS", "DATALOADER", "SEED")
    for cfg in cfgs.values():
        cfg = cfg.clone()
        for key in ("ZSD_UNSEEN_LOGIT_BIAS", "GZSD_SEEN_THRESH"):
            cfg.MODEL.ZSD[key] = cfgs["clf"].MODEL.ZSD[key]
        assert all(cfg[k] == cfgs["clf"][k] for k in keys) and cfg.ZSD.FEATURES == cfgs["clf"].ZSD.FEATURES



def test_shipped_configs_run_the_default_method():
    """The shapes demo and the COCO config run the dense `flf` row's method (the default chosen on
    the validation worlds); the `clf` row keeps the fixed CLF's own settings."""
    flf, clf, single = _cfg("flf"), _cfg("clf"), _cfg("single_label")
    synthesis_keys = ("FUSION", "GAN", "OUTPUT_ACTIVATION")
    classifier_keys = ("BG_PER_FG", "SEEN_ACCURACY_BUDGET", "CALIBRATION_REFERENCE", "SEEN_ROWS", "UNSEEN_LOGIT_BIAS",
                       "MIN_SEEN_LOGIT_BIAS", "ALIGN_SYNTHESIZED", "UNSEEN_MIXTURES", "MIXTURE_RATIO")
    for leaf in ("shapes/zsd_shapes_R18_FPN.yaml", "COCO-ZSD/faster_rcnn_R_101_FPN_65_15.yaml"):
        cfg = get_zsdet_cfg(os.path.join(ROOT, "configs", leaf))
        assert [cfg.SYNTHESIS[k] for k in synthesis_keys] == [flf.SYNTHESIS[k] for k in synthesis_keys] == [
            "flf", "fclswgan", "sigmoid"], leaf
        assert [cfg.ZSD.CLASSIFIER[k] for k in classifier_keys] == [flf.ZSD.CLASSIFIER[k] for k in classifier_keys]
        assert cfg.MODEL.ZSD.ZSD_UNSEEN_LOGIT_BIAS == flf.MODEL.ZSD.ZSD_UNSEEN_LOGIT_BIAS == 3.0, leaf  # rounds 19, 20
        assert cfg.MODEL.ZSD.GZSD_SEEN_THRESH == flf.MODEL.ZSD.GZSD_SEEN_THRESH == 0.4, leaf  # round 22
    assert flf.SYNTHESIS.EPOCHS == 12 and flf.ZSD.CLASSIFIER.SEEN_ACCURACY_BUDGET == 6.5  # rounds 23, 35, 39
    assert flf.ZSD.CLASSIFIER.MIN_SEEN_LOGIT_BIAS == -2.0  # round 24
    assert flf.ZSD.CLASSIFIER.MIXTURE_RATIO == 0.0  # round 37
    assert (flf.ZSD.CLASSIFIER.BG_PER_FG, flf.ZSD.CLASSIFIER.UNSEEN_LOGIT_BIAS) == (0.5, 1.0)  # rounds 10, 20
    assert (flf.ZSD.CLASSIFIER.CALIBRATION_REFERENCE, flf.ZSD.CLASSIFIER.SEEN_ROWS) == ("detector", "retrained")  # 13-15
    assert (clf.SYNTHESIS.OUTPUT_ACTIVATION, clf.SYNTHESIS.CLF_INPUT, clf.SYNTHESIS.CLF_INIT, clf.SYNTHESIS.CLF_DROPOUT,
            clf.SYNTHESIS.EPOCHS) == ("clamp", "pre_activation", "identity", 0.0, 24)
    assert (clf.ZSD.CLASSIFIER.BG_PER_FG, clf.ZSD.CLASSIFIER.ALIGN_SYNTHESIZED) == (0.5, "quantile")
    assert (clf.ZSD.CLASSIFIER.ANCHOR_NEAREST, flf.ZSD.CLASSIFIER.ANCHOR_NEAREST) == (3, 0)  # rounds 41, 29
    assert (flf.ZSD.CLASSIFIER.ALIGN_SYNTHESIZED, single.ZSD.CLASSIFIER.ALIGN_SYNTHESIZED) == ("zeros", "quantile")  # 18, 12
    assert _cfg("alf").ZSD.CLASSIFIER.ALIGN_SYNTHESIZED == "zeros"  # round 18


def _fake_metrics(method, seed):
    value = 10.0 * (METHODS.index(method) + 1) + seed
    zsd = {"recall@100_iou0.4": value + 1, "recall@100_iou0.5": value, "recall@100_iou0.6": value - 1,
           "mAP_iou0.5": value / 2}
    gzsd = {f"{g}_{k}": value for g in ("seen", "unseen", "hm") for k in ("recall@100_iou0.5", "mAP_iou0.5")}
    return {"baseline" if method == "baseline" else "synthesis": {"zsd": zsd, "gzsd": gzsd}}


def test_benchmark_runs_shared_stages_once_then_each_method_and_seed(bench, tmp_path, monkeypatch, capsys,
                                                                   fake_train_net):
    def write_metrics(config, output_dir, opts):
        method, seed = config[:-5], int(opts[opts.index("SYNTHESIS.SEED") + 1])
        metrics = _fake_metrics(method, seed)
        with open(os.path.join(output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f)
        name, = metrics
        inference = os.path.join(output_dir, "inference", f"{name}_zsd")
        os.makedirs(inference)
        per_class = [{"class": "red striped circle", "AP_iou0.5": metrics[name]["zsd"]["mAP_iou0.5"],
                      "recall@100_iou0.5": 1.0}]
        with open(os.path.join(inference, "zsd_results.json"), "w") as f:
            json.dump({"per_class": per_class}, f)

    train_net, calls = fake_train_net(write_metrics)
    monkeypatch.setattr(bench, "train_net", train_net)
    bench.main(["--seeds", "2", "--output-dir", str(tmp_path)])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(d["method"], d["seed"]) for d in lines] == [(m, s) for s in (0, 1) for m in METHODS]
    assert lines[-1]["zsd_recall50"] == 61.0 and lines[-1]["zsd_map50"] == 30.5
    assert lines[0]["gzsd_hm_recall50"] == 10.0 and lines[0]["gzsd_hm_map50"] == 10.0
    assert calls[0][:3] == ("clf.yaml", "shared", ["detector", "features"])
    assert all("detector" not in c[2] for c in calls[1:]) and len(calls) == 13
    assert calls[1][2] == ["baseline", "evaluate"] and calls[-1][2] == ["generator", "classifier", "evaluate"]
    assert [c[1] for c in calls[1:3]] == [os.path.join("baseline", "seed0"), os.path.join("single_label", "seed0")]
    table = open(tmp_path / "results_table.md").read()
    assert "| clf | 61.5 ± 0.7 | 60.5 ± 0.7 |" in table
    assert "| red striped circle | 5.2 / 1.0 | 10.2 / 1.0 |" in table  # per-class means over seeds
    assert os.path.getsize(tmp_path / "zsd_methods.png") > 0
    summary = json.load(open(tmp_path / "summary.json"))
    assert len(summary["runs"]) == 12

    calls.clear()  # resume: finished runs are not run again
    bench.main(["--seeds", "3", "--methods", "clf", "--output-dir", str(tmp_path), "--quick"])
    assert [c[1] for c in calls] == [os.path.join("clf", "seed2")]
    assert calls[0][3][:2] == ["DATASETS.TRAIN", "('zsd_dense_tiny_train',)"]


def test_detector_seeds_train_one_detector_each_and_pool_the_runs(bench, tmp_path, monkeypatch, capsys,
                                                                  fake_train_net):
    """--detector-seeds: stages 1-2 once per detector with its SEED, the runs under det<seed>/ with their
    own seeds; the pooled table is over every run, the per-detector one gives each detector's means and
    the seen fall against clf_official of the same detector and seed."""
    def write_metrics(config, output_dir, opts):
        method, seed = config[:-5], int(opts[opts.index("SYNTHESIS.SEED") + 1])
        detector_seed = int(os.path.basename(os.path.dirname(os.path.dirname(output_dir)))[3:])
        value = (detector_seed - 800) * 10.0 + seed  # detector 806: 60, 61; 807: 70, 71
        seen_right = 80.0 + seed if method == "clf_official" else 76.0 - detector_seed + 806
        metrics = {"synthesis": {"zsd": {"recall@100_iou0.5": value, "mAP_iou0.5": value / 2},
                                 "gzsd": {"hm_mAP_iou0.5": value, "top1_unseen_other_group": 50.0 + seed,
                                          "top1_seen_correct": seen_right}}}
        with open(os.path.join(output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f)
        inference = os.path.join(output_dir, "inference", "synthesis_zsd")
        os.makedirs(inference)
        with open(os.path.join(inference, "zsd_results.json"), "w") as f:
            json.dump({"per_class": [{"class": "c", "AP_iou0.5": value, "recall@100_iou0.5": 1.0}]}, f)

    train_net, calls = fake_train_net(write_metrics)
    monkeypatch.setattr(bench, "train_net", train_net)
    bench.main(["--seeds", "2", "--methods", "flf,clf_official", "--detector-seeds", "806,807",
                "--output-dir", str(tmp_path), "MODEL.ZSD.GZSD_SEEN_THRESH", "0.4"])
    shared_calls = [c for c in calls if "detector" in c[2]]
    assert [c[1] for c in shared_calls] == [os.path.join("det806", "shared"), os.path.join("det807", "shared")]
    assert [c[3][-2:] for c in shared_calls] == [["SEED", "806"], ["SEED", "807"]]
    assert all(c[3][:2] == ["MODEL.ZSD.GZSD_SEEN_THRESH", "0.4"] for c in calls)
    run_calls = [c for c in calls if "detector" not in c[2]]
    assert [c[1] for c in run_calls[:2]] == [os.path.join("det806", "flf", "seed0"),
                                              os.path.join("det806", "clf_official", "seed0")]
    assert len(run_calls) == 8 and all(c[3][-4:-2] == ["SEED", c[3][-1]] for c in run_calls)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(d["detector_seed"], d["method"], d["seed"]) for d in lines[:3]] == [
        (806, "flf", 0), (806, "clf_official", 0), (806, "flf", 1)]
    table = open(tmp_path / "results_table.md").read()
    assert "over 2 detectors x 2 seed(s)" in table
    assert "| flf | n/a | 65.5 ± 5.8 | n/a | 32.8 ± 2.9 |" in table  # pooled over 60, 61, 70, 71
    # detector 806: flf seen right 76, clf_official 80 / 81 -> fall 4.5; detector 807: 75 -> 5.5
    assert "| flf | 806 | 60.5 | 30.2 | 60.5 | 50.5 | 76.0 | 4.5 |" in table
    assert "| flf | 807 | 70.5 | 35.2 | 70.5 | 50.5 | 75.0 | 5.5 |" in table
    assert "| clf_official | 807 | 70.5 | 35.2 | 70.5 | 50.5 | 80.5 | 0.0 |" in table
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["detector_seeds"] == [806, 807] and len(summary["runs"]) == 8
    assert summary["detector_means"]["flf"]["807"]["seen_fall"] == 5.5

    calls.clear()  # resume: both detectors and all runs are done
    bench.main(["--seeds", "2", "--methods", "flf,clf_official", "--detector-seeds", "806,807",
                "--output-dir", str(tmp_path)])
    assert calls == []


def test_bad_method_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods", "clf,zsd"])


@pytest.mark.parametrize("value", ["806,x", "806,806", ","])
def test_bad_detector_seeds_are_refused(bench, value, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--detector-seeds", value])
    assert "--detector-seeds" in capsys.readouterr().err


def test_table_digits_percent_ratios_and_probes(bench):
    """Percent columns 1 digit, spread 2, probe accuracies 3 (their target, 0.75, sits between 2-digit values)."""
    stats = {f"{g}/{m}": (1.0, float("nan")) for _, g, m in bench.TABLE_COLUMNS}
    stats.update({"zsd/mAP_iou0.5": (26.74, 2.2), "feature_quality/spread_ratio": (1.404, 0.41),
                  "anchoring/real_vs_anchored_acc": (0.7473, 0.0071),
                  "alignment/real_vs_synth_acc_after": (0.6342, 0.01)})
    table = bench.format_table({"flf": stats}, "3 seeds")
    assert "26.7 ± 2.2" in table and "1.40 ± 0.41" in table
    assert "0.747 ± 0.007" in table and "0.634 ± 0.010" in table
