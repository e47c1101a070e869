"""The classification runner's pieces: benchmark loading (incl. the official NUS-WIDE pickle), the
paper-layout table, the Fig. 4 plot, standard mode (evaluation: test_mlzsl_evaluation.py)."""
import json
import os

import h5py
import numpy as np
import pytest
from detectron2.config import get_cfg

import zsdet
from zsdet.data.mlzsl import load_benchmark, open_source
from zsdet.engine.classification import run_classification
from zsdet.evaluation.report import format_results_table, plot_ap_change


def base_cfg(tmp_path, **mlzsl):
    cfg = get_cfg()
    zsdet.add_zsdet_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    cfg.SYNTHESIS.DEVICE = "cpu"
    for key, value in mlzsl.items():
        cfg.MLZSL[key] = value
    return cfg


def write_h5(path, n, d, num_labels, seed=0, signed=False):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, num_labels)) < 0.3).astype(np.int8)
    y[np.arange(n), rng.integers(num_labels, size=n)] = 1
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=rng.normal(size=(n, d)).astype(np.float32) + 2 * y[:, :1])
        f.create_dataset("labels", data=(2 * y - 1) if signed else y)
    return str(path)


def test_results_table_has_the_paper_layout():
    metrics = {"zsl": {"mAP": 25.71, "P@3": 26.6, "R@3": 42.84, "F1@3": 32.8, "P@5": 20.1, "R@5": 53.6,
                       "F1@5": 29.3},
               "gzsl": {"mAP": 8.9, "P@3": 30.9, "R@3": 13.6, "F1@3": 18.9, "P@5": 26.0, "R@5": 19.1,
                        "F1@5": 22.0}}
    lines = format_results_table(metrics, [3, 5]).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "Task", "P@3", "R@3", "F1@3", "P@5", "R@5", "F1@5", "mAP"]
    assert [c.strip() for c in lines[2].strip("|").split("|")] == [
        "ZSL", "26.6", "42.8", "32.8", "20.1", "53.6", "29.3", "25.7"]
    assert lines[3].split("|")[1].strip() == "GZSL" and len(lines) == 4
    k_open_images = format_results_table({"zsl": {"mAP": 1, **{f"{m}@{k}": 0 for k in (10, 20)
                                                               for m in ("P", "R", "F1")}}}, [10, 20])
    assert "F1@20" in k_open_images.splitlines()[0]


def test_ap_change_plot(tmp_path):
    ours = {f"l{i}": float(i) for i in range(40)} | {"none": None}
    base = {f"l{i}": 20.0 for i in range(40)}
    path = str(tmp_path / "fig4.png")
    assert plot_ap_change(path, ours, base, top_n=5, title="t") == 40
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no label"):
        plot_ap_change(path, {"x": 1.0}, {"y": 1.0}, 5, "t")


def test_benchmark_config_errors(tmp_path):
    with pytest.raises(ValueError, match="MLZSL.MODE"):
        load_benchmark(base_cfg(tmp_path, MODE="fewshot"))
    with pytest.raises(ValueError, match="TRAIN_FILE"):
        load_benchmark(base_cfg(tmp_path, BENCHMARK="synthetic", TRAIN_FILE="x.h5"))
    with pytest.raises(ValueError, match=r"MLZSL.ZSL_TEST_FILE"):
        load_benchmark(base_cfg(tmp_path, BENCHMARK="coco", TRAIN_FILE="t.h5", GZSL_TEST_FILE="g.h5"))
    with pytest.raises(ValueError, match="only valid with MLZSL.MODE='standard'"):
        load_benchmark(base_cfg(tmp_path, SYNTH_LABEL_SETS="none"))


def test_nus_wide_official_pickle_and_file_columns(tmp_path):
    """925 seen tags / 81 concepts from the official GloVe pickle (shipped, read through the
    zsdet:// path of the NUS-WIDE config); tiny files in the real layout."""
    config = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "classification",
                          "nus_wide_clf_vaegan.yaml")
    pickle_path = zsdet.get_zsdet_cfg(config).MLZSL.EMBEDDINGS_FILE
    assert pickle_path.startswith("zsdet://")
    files = {"TRAIN_FILE": write_h5(tmp_path / "train.h5", 12, 8, 925),
             "ZSL_TEST_FILE": write_h5(tmp_path / "zsl.h5", 6, 8, 81),
             "GZSL_TEST_FILE": write_h5(tmp_path / "gzsl.h5", 6, 8, 1006, signed=True)}
    cfg = base_cfg(tmp_path, BENCHMARK="nus_wide", EMBEDDINGS_FILE=str(pickle_path),
                   EMBEDDINGS_FORMAT="nus_wide_pickle", **files)
    bench = load_benchmark(cfg)
    assert len(bench.seen_names) == 925 and len(bench.unseen_names) == 81
    assert bench.embeddings.shape == (1006, 300)
    assert np.allclose(np.linalg.norm(bench.embeddings, axis=1), 1, atol=1e-5)
    zsl = open_source(cfg, bench, "ZSL_TEST_FILE", 1006)
    (x, y), = zsl.iter_batches(6, 0, 0)
    assert y[:, :925].sum() == 0 and y[:, 925:].sum() > 0  # ZSL columns are the 81 unseen classes
    wrong = base_cfg(tmp_path, BENCHMARK="nus_wide", EMBEDDINGS_FILE=str(pickle_path),
                     EMBEDDINGS_FORMAT="nus_wide_pickle", **{**files, "ZSL_TEST_FILE": files["TRAIN_FILE"]})
    with pytest.raises(ValueError, match="925 columns but 81 classes"):
        open_source(wrong, load_benchmark(wrong), "ZSL_TEST_FILE", 1006)


def standard_mode_cfg(tmp_path, **mlzsl):
    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    write_h5(root / "train.h5", 200, 6, 4, seed=1)
    write_h5(root / "test.h5", 60, 6, 4, seed=2, signed=True)
    (root / "seen.txt").write_text("a\nb\nc\nd\n")
    return base_cfg(tmp_path, BENCHMARK="toy", MODE="standard", DATA_ROOT=str(root), TRAIN_FILE="train.h5",
                    TEST_FILE="test.h5", SEEN_CLASSES_FILE="seen.txt", SYNTH_LABEL_SETS="none", **mlzsl)


def test_a_budget_too_small_to_evaluate_fails_before_training(tmp_path):
    cfg = standard_mode_cfg(tmp_path, STREAM_MEMORY_MB=0.005)  # evaluating 60 images needs ~0.01 MiB
    with pytest.raises(ValueError, match=r"MLZSL.STREAM_MEMORY_MB=0.005 is below .*/test.h5 \(60 images\)"):
        run_classification(cfg)
    assert not os.path.exists(os.path.join(cfg.OUTPUT_DIR, "classifiers.pth"))


def test_standard_mode_without_synthesis_runs_end_to_end(tmp_path):
    """Table 4 mode: every label seen, a head on real features only, relative paths via DATA_ROOT."""
    cfg = standard_mode_cfg(tmp_path, TOP_K=[1, 2])
    cfg.SYNTHESIS.CLASSIFIER.EPOCHS = 20
    cfg.SYNTHESIS.CLASSIFIER.BATCH_SIZE = 32
    results = run_classification(cfg)
    assert set(results["metrics"]) == {"standard"} and results["num_synthesized"] == 0
    assert results["per_label_ap"]["standard"]["a"] > 80  # feature 0 carries label a
    saved = json.load(open(os.path.join(cfg.OUTPUT_DIR, "results.json")))
    assert saved["metrics"]["standard"] == pytest.approx(results["metrics"]["standard"])
    again = run_classification(cfg, eval_only=True)  # the saved head gives the same numbers
    assert again["metrics"]["standard"] == pytest.approx(results["metrics"]["standard"])
