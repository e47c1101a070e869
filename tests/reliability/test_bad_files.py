"""Damaged classification inputs (issue 10, item 12): a truncated HDF5 feature file is an error
naming it, a truncated generated file is generated again, and a test file without rows is
rejected before any training."""
import os
import shutil

import h5py
import numpy as np
import pytest

from zsdet.config import get_zsdet_cfg
from zsdet.data.mlzsl import H5FeatureSource, SyntheticBenchmarkSpec, write_synthetic_benchmark
from zsdet.engine.classification import run_classification

SPEC = SyntheticBenchmarkSpec(num_seen=4, num_unseen=2, feature_dim=8, embedding_dim=4, num_train=64,
                              num_zsl_test=16, num_gzsl_test=16, num_topics=2)


def truncate(path, fraction=0.6):
    os.truncate(path, int(os.path.getsize(path) * fraction))


def read(path):
    with h5py.File(path, "r") as f:
        return f["features"][:], f["labels"][:]


def test_truncated_feature_file_is_named(tmp_path):
    paths = write_synthetic_benchmark(str(tmp_path), SPEC)
    truncate(paths["train"])
    with pytest.raises(ValueError, match=rf"{paths['train']} is not a readable HDF5 file"):
        H5FeatureSource(paths["train"])


def test_truncated_generated_file_is_generated_again(tmp_path):
    paths = write_synthetic_benchmark(str(tmp_path / "data"), SPEC)
    shutil.copy(paths["train"], tmp_path / "intact.h5")
    truncate(paths["train"])
    write_synthetic_benchmark(str(tmp_path / "data"), SPEC)
    for fresh, intact in zip(read(paths["train"]), read(tmp_path / "intact.h5")):
        np.testing.assert_array_equal(fresh, intact)


def test_test_file_without_rows_is_rejected_before_training(tmp_path):
    paths = write_synthetic_benchmark(str(tmp_path / "data"), SPEC)
    with h5py.File(paths["zsl_test"], "w") as f:
        f.create_dataset("features", shape=(0, SPEC.feature_dim), dtype=np.float32)
        f.create_dataset("labels", shape=(0, SPEC.num_unseen), dtype=np.int8)
    out = tmp_path / "out"
    cfg = get_zsdet_cfg(opts=[
        "OUTPUT_DIR", str(out), "SYNTHESIS.DEVICE", "cpu", "MLZSL.BENCHMARK", "custom",
        "MLZSL.TRAIN_FILE", paths["train"], "MLZSL.ZSL_TEST_FILE", paths["zsl_test"],
        "MLZSL.GZSL_TEST_FILE", paths["gzsl_test"], "MLZSL.SEEN_CLASSES_FILE", paths["seen_classes"],
        "MLZSL.UNSEEN_CLASSES_FILE", paths["unseen_classes"], "MLZSL.EMBEDDINGS_FILE", paths["embeddings"]])
    with pytest.raises(ValueError, match=rf"MLZSL\.ZSL_TEST_FILE: {paths['zsl_test']} has no rows"):
        run_classification(cfg)
    assert not (out / "generator").exists()
