"""Evaluation of a classifier head on a streamed HDF5 test file: the same numbers as the in-memory
evaluator, signed / plain label files, and the memory bound on a score matrix above the budget."""
import json
import tracemalloc

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from zsdet.config import get_zsdet_cfg
from zsdet.data.mlzsl import H5FeatureSource, to_signed_labels
from zsdet.engine.classification import evaluate_task
from zsdet.evaluation import MultiLabelEvaluator


def write_file(path, feats, labels):
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=np.asarray(feats, np.float32))
        f.create_dataset("labels", data=labels)
    return str(path)


def random_file(path, n, d, num_classes, signed, seed=0):
    """Features carrying each image's labels through a random projection, so AP is informative."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, num_classes)) < 0.1).astype(np.int8)
    proj = rng.normal(size=(num_classes, d)).astype(np.float32)
    feats = y @ proj + rng.normal(size=(n, d)).astype(np.float32)
    if signed:  # verified negatives -1, a fifth of the entries unknown (0)
        y = np.where(rng.random((n, num_classes)) < 0.2, 0, 2 * y - 1).astype(np.int8)
    return write_file(path, feats, y), proj


def linear_head(weight, bias):
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight))
        head.bias.copy_(torch.as_tensor(bias))
    return head


def cfg_with(**mlzsl):
    cfg = get_zsdet_cfg()
    for key, value in mlzsl.items():
        cfg.MLZSL[key] = value
    return cfg


def source_for(cfg, path):
    """The test file reader with half the budget, as run_classification opens it."""
    return H5FeatureSource(path, memory_budget_mb=cfg.MLZSL.STREAM_MEMORY_MB / 2, block_rows=64)


@pytest.mark.parametrize("signed, convention", [(False, "standard"), (True, "official")])
def test_streamed_evaluation_equals_the_in_memory_evaluator(tmp_path, signed, convention):
    n, d, C = 600, 32, 40
    path, proj = random_file(tmp_path / "test.h5", n, d, C, signed)
    head = linear_head(proj, np.random.default_rng(1).normal(size=C) * 0.1)
    # 64 KiB for the reader (2 row groups) and 64 KiB for scores: 8 blocks of 5 classes
    cfg = cfg_with(STREAM_MEMORY_MB=0.125, TOP_K=[3, 50], AP_CONVENTION=convention)
    names = [f"c{i}" for i in range(C)]
    summary, per_label = evaluate_task(cfg, "gzsl", head, source_for(cfg, path), names, str(tmp_path / "s"))

    with h5py.File(path) as f:  # the in-memory path: the whole score matrix at once
        x, labels = f["features"][:], f["labels"][:]
    evaluator = MultiLabelEvaluator(str(tmp_path / "m"), ks=[3, 50], convention=convention,
                                    ignore_zero=True, task="gzsl", class_names=names, distributed=False)
    with torch.no_grad():
        evaluator.process([{"labels": row} for row in to_signed_labels(labels)], head(torch.from_numpy(x)))
    expected = evaluator.evaluate()["gzsl"]
    assert summary == pytest.approx(expected, rel=1e-6)
    assert 30 < summary["mAP"] < 99  # informative scores, not a degenerate case
    saved = json.loads((tmp_path / "m" / "gzsl_results.json").read_text())["per_label_AP"]
    assert per_label == pytest.approx(saved, rel=1e-6)
    assert json.loads((tmp_path / "s" / "gzsl_results.json").read_text())["per_label_AP"] == per_label


def test_zero_is_unknown_only_in_signed_files(tmp_path):
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.1, 0.2]], np.float32)
    plain = np.array([[0, 1], [1, 0], [0, 1]], np.int8)  # image 0 is a negative for label 0
    signed = np.array([[0, 1], [1, -1], [-1, 1]], np.int8)  # image 0 is unknown for label 0
    cfg = cfg_with(TOP_K=[1])
    identity = linear_head(np.eye(2), np.zeros(2))  # features = scores
    results = [evaluate_task(cfg, "t", identity, source_for(cfg, write_file(tmp_path / f"{i}.h5", scores, y)),
                             ["a", "b"], str(tmp_path)) for i, y in enumerate((plain, signed))]
    (m_plain, ap_plain), (m_signed, ap_signed) = results
    assert ap_plain["a"] == pytest.approx(50.0)  # the negative outranks the only positive
    assert ap_signed["a"] == pytest.approx(100.0)  # the unknown is left out of the ranking
    assert m_plain["P@1"] == pytest.approx(200 / 3) and m_signed["P@1"] == pytest.approx(200 / 3)
    assert set(m_plain) == {"mAP", "P@1", "R@1", "F1@1"}
    with pytest.raises(ValueError, match="2 label columns but the classifier scores 3 classes"):
        evaluate_task(cfg, "t", linear_head(np.eye(3, 2), np.zeros(3)),
                      source_for(cfg, str(tmp_path / "0.h5")), ["a", "b", "c"], str(tmp_path))


def test_evaluation_stays_within_the_memory_budget(tmp_path):
    """A 4000 x 400 score matrix (6.1 MiB + 1.5 MiB labels) evaluated within a 2 MiB budget."""
    n, d, C = 4000, 64, 400
    path, proj = random_file(tmp_path / "big.h5", n, d, C, signed=True)
    head = linear_head(proj, np.zeros(C))
    cfg = cfg_with(STREAM_MEMORY_MB=2.0, TOP_K=[10, 20])
    budget = 2 * 2 ** 20
    assert n * C * 4 > 3 * budget
    source = source_for(cfg, path)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        summary, _ = evaluate_task(cfg, "gzsl", head, source, [str(c) for c in range(C)], str(tmp_path))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert summary["mAP"] > 30
    assert peak <= budget + 256 * 1024, f"peak {peak / 2 ** 20:.3f} MiB"
    assert peak >= budget / 2  # the measurement sees the buffers (guards a vacuous pass)
