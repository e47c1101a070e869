"""The generated synthetic benchmark: real file layout, split semantics, determinism, and that
unseen-class features follow from the class embeddings (the property that makes ZSL learnable)."""
import json

import h5py
import numpy as np

from zsdet.data.embeddings import load_class_embeddings, read_class_list
from zsdet.data.mlzsl import H5FeatureSource, SyntheticBenchmarkSpec, write_synthetic_benchmark

TINY = SyntheticBenchmarkSpec(num_seen=8, num_unseen=4, feature_dim=24, embedding_dim=6, num_train=300,
                              num_zsl_test=80, num_gzsl_test=100, max_labels=3, num_topics=3,
                              feature_noise=0.1, prototype_noise=0.0)


def read(path):
    with h5py.File(path, "r") as f:
        return f["features"][:], f["labels"][:]


def test_files_layout_and_splits(tmp_path):
    paths = write_synthetic_benchmark(str(tmp_path), TINY)
    x_tr, y_tr = read(paths["train"])
    x_zsl, y_zsl = read(paths["zsl_test"])
    x_g, y_g = read(paths["gzsl_test"])
    assert x_tr.shape == (300, 24) and y_tr.shape == (300, 8)  # seen columns only
    assert y_zsl.shape == (80, 4) and y_g.shape == (100, 12)  # unseen / seen + unseen columns
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int8 and set(np.unique(y_g)) <= {0, 1}
    assert y_tr.sum(1).min() >= 1 and y_zsl.sum(1).min() >= 1  # no empty train / ZSL rows
    assert y_tr.sum(1).max() <= 3
    assert read_class_list(paths["seen_classes"]) == [f"seen{i:03d}" for i in range(8)]
    names = read_class_list(paths["seen_classes"]) + read_class_list(paths["unseen_classes"])
    emb = load_class_embeddings(paths["embeddings"], names, "npy")  # .npy + <stem>.txt sidecar
    assert emb.shape == (12, 6)
    assert json.load(open(paths["manifest"]))["rows"] == {"train": 300, "zsl_test": 80, "gzsl_test": 100}
    # the streamed reader accepts the files as they are
    assert len(H5FeatureSource(paths["gzsl_test"])) == 100


def test_deterministic_reused_and_signed_variant(tmp_path):
    a = write_synthetic_benchmark(str(tmp_path / "a"), TINY)
    b = write_synthetic_benchmark(str(tmp_path / "b"), TINY)
    for key in ("train", "zsl_test", "gzsl_test"):
        assert all(np.array_equal(u, v) for u, v in zip(read(a[key]), read(b[key])))
    stamp = (tmp_path / "a" / "seen_train.h5").stat().st_mtime_ns
    write_synthetic_benchmark(str(tmp_path / "a"), TINY)  # same spec: reused, not rewritten
    assert (tmp_path / "a" / "seen_train.h5").stat().st_mtime_ns == stamp
    signed = write_synthetic_benchmark(str(tmp_path / "s"), SyntheticBenchmarkSpec(
        **{**TINY.__dict__, "signed_labels": True}))
    _, y_signed = read(signed["gzsl_test"])
    _, y_plain = read(a["gzsl_test"])
    assert set(np.unique(y_signed)) == {-1, 1} and np.array_equal(y_signed == 1, y_plain == 1)


def test_unseen_features_are_predictable_from_embeddings(tmp_path):
    """Least squares on seen-train data recovers the embedding -> prototype map, which then
    explains ZSL-test features from unseen embeddings (compositional generative story)."""
    paths = write_synthetic_benchmark(str(tmp_path), TINY)
    names = read_class_list(paths["seen_classes"]) + read_class_list(paths["unseen_classes"])
    emb = load_class_embeddings(paths["embeddings"], names, "npy", normalize="none")
    x_tr, y_tr = read(paths["train"])
    x_g, y_g = read(paths["gzsl_test"])
    # x = y E W + noise: fit W on seen-only images, predict test features that contain unseen classes
    w, *_ = np.linalg.lstsq(y_tr @ emb[:8], x_tr, rcond=None)
    has_unseen = y_g[:, 8:].any(1)
    pred = y_g[has_unseen] @ emb @ w
    resid = np.mean((x_g[has_unseen] - pred) ** 2) / np.mean(x_g[has_unseen] ** 2)
    assert resid < 0.05
