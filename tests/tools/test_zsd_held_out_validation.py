"""The plumbing of benchmarks/zsd_held_out_validation.py (stages faked): one detector and RoI bank per
validation world, every candidate x seed on it with its overrides, a table over splits and seeds."""
import json
import os

import pytest


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/zsd_held_out_validation.py")


def test_each_world_trains_its_own_detector_and_runs_every_candidate(bench, tmp_path, monkeypatch, capsys,
                                                                      fake_train_net):
    def write_metrics(config, output_dir, opts):
        split = int(opts[opts.index("DATASETS.TRAIN") + 1].split("heldout")[1][0])
        value = 10.0 * split + int(opts[opts.index("SEED") + 1]) + (5.0 if "sigmoid" in opts else 0.0)
        result = {"zsd": {"recall@100_iou0.5": value, "mAP_iou0.5": value / 2},
                  "gzsd": {"hm_mAP_iou0.5": value, "top1_unseen_other_group": 50.0, "top1_seen_correct": 40.0},
                  "feature_quality": {"spread_ratio": 1.0, "real_vs_synth_acc": 0.8}}
        with open(os.path.join(output_dir, "metrics.json"), "w") as f:
            json.dump({"synthesis": result}, f)

    train_net, calls = fake_train_net(write_metrics)
    monkeypatch.setattr(bench, "train_net", train_net)
    bench.main(["--splits", "0,2", "--seeds", "2", "--output-dir", str(tmp_path)])
    shared = [c for c in calls if "detector" in c[2]]
    assert [c[1] for c in shared] == [os.path.join("split0", "shared"), os.path.join("split2", "shared")]
    assert shared[1][3][:2] == ["DATASETS.TRAIN", "('zsd_dense_heldout2_train',)"]
    runs = [c for c in calls if "detector" not in c[2]]
    assert len(runs) == 2 * 2 * 9 and all(c[2] == ["generator", "classifier", "evaluate"] for c in runs)
    no_calibration = [c for c in runs if "alf_no_calibration" in c[1]]
    assert len(no_calibration) == 4 and all(c[3][-2:] == ["ZSD.CLASSIFIER.SEEN_ACCURACY_BUDGET", "0.0"]
                                            for c in no_calibration)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(d["candidate"], d["split"], d["seed"]) for d in lines][:3] == [
        ("clf", 0, 0), ("clf_sigmoid_bg1", 0, 0), ("alf", 0, 0)]
    assert lines[1]["selection_score"] == (2.5 + 5.0) / 2  # mean of ZSD mAP and GZSD HM mAP
    table = open(tmp_path / "results_table.md").read()
    assert "| clf | 7.9 ± 8.7 (0.4, 15.4) | 10.5 ± 11.6 (0.5, 20.5) |" in table
    assert "| clf_sigmoid_bg1 | 11.6 ± 8.7 (4.1, 19.1) | 15.5 ± 11.6 (5.5, 25.5) |" in table

    calls.clear()  # resume: finished runs are kept; a new candidate runs on the same worlds, --quick is tiny
    bench.main(["--splits", "0", "--seeds", "1", "--output-dir", str(tmp_path), "--candidate", "clf_30ep", "clf.yaml",
                "SYNTHESIS.EPOCHS", "30"])
    assert [c[1] for c in calls] == [os.path.join("split0", "clf_30ep", "seed0")]
    calls.clear()  # fresh seeds only: --first-seed 1 runs seeds 1-2, with their own SEED, and not seed 0 again
    bench.main(["--splits", "0", "--seeds", "2", "--first-seed", "1", "--output-dir", str(tmp_path),
                "--candidate", "clf_30ep", "clf.yaml", "SYNTHESIS.EPOCHS", "30"])
    assert [c[1] for c in calls] == [os.path.join("split0", "clf_30ep", f"seed{s}") for s in (1, 2)]
    assert [c[3][c[3].index("SEED") + 1] for c in calls] == ["1", "2"]
    assert json.load(open(tmp_path / "summary.json"))["first_seed"] == 1
    quick = bench.world_opts(1, quick=True)
    assert quick[1] == "('zsd_dense_tiny_heldout1_train',)" and "SOLVER.MAX_ITER" in quick
    assert bench.world_opts(2, False, 4)[1] == "('zsd_dense_heldout2_h4_train',)"
    assert bench.parse_args(["--held-out-classes", "4"]).held_out_classes == 4
    assert bench.parse_args(["--splits", "3,8"]).splits == [3, 8]  # the fifth round's worlds

    calls.clear()  # detector overrides reach the shared stages and every candidate run
    bench.main(["--splits", "1", "--seeds", "1", "--output-dir", str(tmp_path / "aux"), "--detector-opts",
                "MODEL.ZSD.SEMANTIC_AUX_WEIGHT", "1.0", "--candidate", "flf", "flf.yaml"])
    assert len(calls) == 2 and all(c[3][8:10] == ["MODEL.ZSD.SEMANTIC_AUX_WEIGHT", "1.0"] for c in calls)


def test_shapes_family_runs_its_worlds_with_the_shapes_configs(bench, tmp_path, monkeypatch, fake_train_net):
    """--family shapes: zsd_shapes_heldout<k> worlds, configs/shapes files, round 27's two candidates by default."""
    def write_metrics(config, output_dir, opts):
        linear = opts[-2:] == ["ZSD.CLASSIFIER.HIDDEN_UNITS", "0"]
        result = {"zsd": {"recall@100_iou0.5": 60.0, "mAP_iou0.5": 20.0},
                  "gzsd": {"hm_mAP_iou0.5": 30.0, "top1_unseen_other_group": 30.0 if linear else 50.0,
                           "top1_seen_correct": 90.0}}
        with open(os.path.join(output_dir, "metrics.json"), "w") as f:
            json.dump({"synthesis": result}, f)

    train_net, calls = fake_train_net(write_metrics)
    monkeypatch.setattr(bench, "train_net", train_net)
    bench.main(["--family", "shapes", "--splits", "3", "--seeds", "1", "--output-dir", str(tmp_path)])
    shapes_dir = os.path.join(bench.ROOT, "configs", "shapes")
    assert [(c[0], c[1], c[4]) for c in calls] == [
        ("zsd_shapes_R18_FPN.yaml", os.path.join("split3", "shared"), shapes_dir),
        ("zsd_shapes_R18_FPN.yaml", os.path.join("split3", "shapes_default", "seed0"), shapes_dir),
        ("zsd_shapes_R18_FPN.yaml", os.path.join("split3", "shapes_linear", "seed0"), shapes_dir)]
    assert calls[0][3][:2] == ["DATASETS.TRAIN", "('zsd_shapes_heldout3_train',)"]
    assert calls[1][2] == ["generator", "classifier", "baseline", "evaluate"]  # the shapes config's stages
    summary = json.load(open(tmp_path / "summary.json"))
    assert summary["family"] == "shapes"
    assert [(r["candidate"], r["top1_unseen_as_seen"]) for r in summary["runs"]] == [
        ("shapes_default", 50.0), ("shapes_linear", 30.0)]
    assert bench.world_opts(2, True, 3, bench.FAMILIES["shapes"])[1] == "('zsd_shapes_tiny_heldout2_train',)"


@pytest.mark.parametrize("argv", [["--family", "shapes", "--splits", "4"],
                                  ["--family", "shapes", "--held-out-classes", "8"],
                                  ["--family", "shapes", "--candidate", "x", "flf.yaml"], ["--family", "coco"]])
def test_bad_shapes_family_arguments_are_refused(bench, argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


@pytest.mark.parametrize("argv", [["--splits", "9"], ["--splits", "a"], ["--seeds", "0"], ["--first-seed", "-1"],
                                  ["--held-out-classes", "5"],
                                  ["--candidate", "x", "no_such.yaml"], ["--candidate", "x", "alf.yaml", "KEY"],
                                  ["--candidate", "x", "alf.yaml", "--candidate", "x", "flf.yaml"],
                                  ["--detector-opts", "MODEL.ZSD.SEMANTIC_AUX_WEIGHT"]])
def test_bad_arguments_are_refused(bench, argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


@pytest.mark.parametrize("probability, dof, table_value", [
    (0.90, 1, 3.078), (0.90, 2, 1.886), (0.90, 3, 1.638), (0.90, 8, 1.397), (0.95, 4, 2.132),
    (0.975, 5, 2.571), (0.99, 7, 2.998), (0.95, 30, 1.697)])
def test_student_t_quantile_matches_the_printed_tables(bench, probability, dof, table_value):
    assert bench.student_t_quantile(probability, dof) == pytest.approx(table_value, abs=5e-4)


def test_seen_fall_is_paired_by_seed_and_bounded_over_splits(bench):
    def line(candidate, split, seed, seen):
        return {**{key: 1.0 for _, key, _ in bench.COLUMNS}, "candidate": candidate, "split": split, "seed": seed,
                "top1_seen_correct": seen}
    # reference 80 everywhere; the candidate falls 2/4 (seeds) on split 0, 5 on split 1, 6 on split 2
    lines = [line("ref", k, s, 80.0) for k in range(3) for s in range(2)]
    lines += [line("cand", 0, 0, 78.0), line("cand", 0, 1, 76.0), line("cand", 1, 0, 75.0), line("cand", 1, 1, 75.0),
              line("cand", 2, 0, 74.0), line("cand", 2, 1, 74.0)]
    mean, bound = bench.seen_fall(lines, "cand", "ref", [0, 1, 2])
    assert mean == pytest.approx(14 / 3)  # per split 3, 5, 6 (seeds averaged first)
    assert bound == pytest.approx(14 / 3 + 1.8856 * (7 / 3) ** 0.5 / 3 ** 0.5, abs=1e-3)  # sd of (3, 5, 6): sqrt(7/3)
    assert bench.seen_fall(lines, "ref", "ref", [0, 1, 2]) == (0.0, 0.0)
    falls = {name: bench.seen_fall(lines, name, "ref", [0, 1, 2]) for name in ("ref", "cand")}
    table = bench.format_table(lines, ["ref", "cand"], [0, 1, 2], seen_reference="ref", seen_falls=falls)
    assert "seen fall vs ref | fall bound (90 %) |" in table
    assert table.splitlines()[-1].endswith(f"| 4.67 | {bound:.2f} |")
    assert "fall bound" not in bench.format_table(lines, ["ref", "cand"], [0, 1, 2])


def test_seen_reference_adds_the_fall_to_the_table_and_summary(bench, tmp_path, monkeypatch, fake_train_net):
    with pytest.raises(SystemExit):  # the reference must be a candidate of the run
        bench.parse_args(["--seen-reference", "clf_official", "--candidate", "flf", "flf.yaml"])

    def write_metrics(config, output_dir, opts):  # seen right 80 (official), 75 + split (flf)
        split = int(opts[opts.index("DATASETS.TRAIN") + 1].split("heldout")[1][0])
        seen = 80.0 if config == "clf_official.yaml" else 75.0 + split
        result = {"zsd": {"recall@100_iou0.5": 50.0, "mAP_iou0.5": 20.0},
                  "gzsd": {"hm_mAP_iou0.5": 30.0, "top1_unseen_other_group": 50.0, "top1_seen_correct": seen}}
        with open(os.path.join(output_dir, "metrics.json"), "w") as f:
            json.dump({"synthesis": result}, f)

    train_net, _ = fake_train_net(write_metrics)
    monkeypatch.setattr(bench, "train_net", train_net)
    bench.main(["--splits", "0,1", "--seeds", "1", "--output-dir", str(tmp_path), "--seen-reference", "clf_official",
                "--candidate", "clf_official", "clf_official.yaml", "--candidate", "flf", "flf.yaml"])
    summary = json.load(open(tmp_path / "summary.json"))
    fall = summary["seen_fall"]["flf"]  # falls 5 and 4: mean 4.5, sd sqrt(0.5), t(0.90, 1) = 3.078
    assert summary["seen_reference"] == "clf_official" and fall["mean"] == pytest.approx(4.5)
    assert fall["bound90"] == pytest.approx(4.5 + 3.0777 * 0.5, abs=1e-3)
    assert "| 4.50 | 6.04 |" in open(tmp_path / "results_table.md").read()
