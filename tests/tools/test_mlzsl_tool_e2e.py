"""tools/train_mlzsl.py end to end on a tiny synthetic benchmark (seconds): training, table, JSON,
the saved classifiers (--eval-only) and the Fig. 4 plot against a baseline run."""
import json
from pathlib import Path

import pytest
from detectron2.engine import default_argument_parser

REPO = Path(__file__).resolve().parents[2]
TINY_OPTS = [
    "MLZSL.SYNTHETIC.NUM_SEEN", "8", "MLZSL.SYNTHETIC.NUM_UNSEEN", "4", "MLZSL.SYNTHETIC.FEATURE_DIM", "16",
    "MLZSL.SYNTHETIC.EMBED_DIM", "8", "MLZSL.SYNTHETIC.NUM_TRAIN", "320", "MLZSL.SYNTHETIC.NUM_ZSL_TEST", "60",
    "MLZSL.SYNTHETIC.NUM_GZSL_TEST", "80", "MLZSL.SYNTHETIC.NUM_TOPICS", "3", "MLZSL.STREAM_BLOCK_ROWS", "32",
    "MLZSL.STREAM_MEMORY_MB", "0.02",
    "SYNTHESIS.GEN_HIDDEN", "32", "SYNTHESIS.DISC_HIDDEN", "32", "SYNTHESIS.ENC_HIDDEN", "32",
    "SYNTHESIS.CLF_HEADS", "2", "SYNTHESIS.CLF_FF_HIDDEN", "32", "SYNTHESIS.EPOCHS", "2",
    "SYNTHESIS.BATCH_SIZE", "32", "SYNTHESIS.VAL_FRACTION", "0.2", "SYNTHESIS.VAL_SYNTH_SETS", "64",
    "SYNTHESIS.NUM_PER_CLASS", "16", "SYNTHESIS.CLASSIFIER.EPOCHS", "2", "SYNTHESIS.CLASSIFIER.BATCH_SIZE", "64",
    "SYNTHESIS.DEVICE", "cpu",
]


def run(train_mlzsl, out, flags=(), opts=()):
    args = default_argument_parser().parse_args(
        ["--config-file", str(REPO / "configs/classification/synthetic.yaml"), *flags,
         "OUTPUT_DIR", str(out), *TINY_OPTS, *opts])
    return train_mlzsl.main(args)


def test_synthetic_benchmark_end_to_end(train_mlzsl, tmp_path, capfd):
    out = tmp_path / "run"
    results = run(train_mlzsl, out)
    assert set(results["metrics"]) == {"zsl", "gzsl"}
    for task in ("zsl", "gzsl"):
        values = results["metrics"][task]
        assert set(values) == {"mAP", "P@3", "R@3", "F1@3", "P@5", "R@5", "F1@5"}
        assert all(0 <= v <= 100 for v in values.values())
    assert len(results["per_label_ap"]["zsl"]) == 4 and len(results["per_label_ap"]["gzsl"]) == 12
    assert results["generator"]["epochs_run"] == 2 and results["num_synthesized"] > 4 * 16
    assert json.loads((out / "results.json").read_text())["metrics"]["zsl"]["mAP"] == pytest.approx(
        results["metrics"]["zsl"]["mAP"])
    for name in ("config.yaml", "classifiers.pth", "zsl_results.json", "generator/model_best.pth",
                 "generator/metrics.jsonl", "synthetic_data/seen_train.h5"):
        assert (out / name).is_file(), name
    logged = capfd.readouterr()
    assert "| Task   |   P@3 |" in logged.out + logged.err
    quality = results["feature_quality"]  # the generator against held-out seen training rows
    assert 0 <= quality["real_vs_synth_acc"] <= 1 and quality["num_real"] > 0 and quality["spread_ratio"] >= 0
    assert "feature quality (held-out seen rows)" in logged.out + logged.err
    assert (out / "feature_quality.png").stat().st_size > 1000

    again = run(train_mlzsl, out, flags=["--eval-only"])
    assert again["metrics"]["gzsl"] == pytest.approx(results["metrics"]["gzsl"])
    assert again["eval_only"] and again["generator"] == results["generator"]
    assert again["feature_quality"] == results["feature_quality"]

    plotted = run(train_mlzsl, tmp_path / "vs_baseline", opts=["MLZSL.PLOT_BASELINE_JSON", str(out / "results.json"),
                                                        "MLZSL.SYNTHETIC.DIR", str(out / "synthetic_data")])
    assert (tmp_path / "vs_baseline" / "ap_change_zsl.png").is_file()
    assert (tmp_path / "vs_baseline" / "ap_change_gzsl.png").is_file()
    assert plotted["metrics"]["zsl"] == pytest.approx(results["metrics"]["zsl"])  # seeded: same run
