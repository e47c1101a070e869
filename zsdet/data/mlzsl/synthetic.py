"""A generated multi-label zero-shot benchmark in the real file formats, for CPU-only end-to-end runs.

The generative story is compositional, so unseen labels are learnable from class embeddings alone:
  * class embeddings ``e_k`` (a-d, L2-normalised), seen classes first, then unseen;
  * class prototypes ``p_k = W e_k + prototype_noise * eps_k`` with one random linear map ``W``
    shared by all classes (seen and unseen);
  * an image's label set comes from one of ``num_topics`` topics (a sparse distribution over all
    classes, so labels co-occur), size uniform in ``[1, max_labels]``;
  * its feature is ``x = sum_{k in labels} p_k + feature_noise * eps``.

Files written to ``out_dir`` (the layout :mod:`zsdet.data.mlzsl.h5_features` reads):
  * ``seen_train.h5``: images without unseen labels, labels over the S seen classes;
  * ``zsl_test.h5``: images with at least one unseen label, labels over the U unseen classes;
  * ``gzsl_test.h5``: other images of any kind, labels over all S + U classes (seen first);
  * ``class_embeddings.npy`` (S + U, a) float32, rows named by ``class_embeddings.txt``;
  * ``class_embeddings.txt``, ``seen_classes.txt``, ``unseen_classes.txt``: one name per line;
  * ``benchmark.json``: the spec and row counts, written last (its presence marks a complete set).
"""
import dataclasses
import io
import json
import logging
import os
from typing import Dict, Optional

import h5py
import numpy as np

from ...utils.io import atomic_file, write_bytes, write_json, write_text
from .h5_features import open_feature_file

__all__ = ["SyntheticBenchmarkSpec", "write_synthetic_benchmark", "synthetic_benchmark_paths"]

MANIFEST = "benchmark.json"

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SyntheticBenchmarkSpec:
    """Sizes and noise levels of the generated benchmark (see the module docstring)."""

    num_seen: int = 40
    num_unseen: int = 10
    feature_dim: int = 128
    embedding_dim: int = 64
    num_train: int = 4000
    num_zsl_test: int = 1000
    num_gzsl_test: int = 1500
    max_labels: int = 3
    num_topics: int = 8
    prototype_noise: float = 0.3
    feature_noise: float = 1.0
    signed_labels: bool = False  # True: negatives written as -1 (the signed layout), else 0
    seed: int = 0


def synthetic_benchmark_paths(out_dir: str) -> Dict[str, str]:
    """Paths of every file of a benchmark in ``out_dir`` (keys as in the module docstring)."""
    names = {"train": "seen_train.h5", "zsl_test": "zsl_test.h5", "gzsl_test": "gzsl_test.h5",
             "embeddings": "class_embeddings.npy", "class_list": "class_embeddings.txt",
             "seen_classes": "seen_classes.txt", "unseen_classes": "unseen_classes.txt",
             "manifest": MANIFEST}
    return {k: os.path.join(out_dir, v) for k, v in names.items()}


def _sample_label_sets(rng: np.random.Generator, topic_probs: np.ndarray, n: int,
                       max_labels: int) -> np.ndarray:
    """(n, C) bool multi-hot: a topic per image, then 1..max_labels classes without replacement
    (Gumbel top-k on the topic's log-probabilities)."""
    topics = rng.integers(len(topic_probs), size=n)
    sizes = rng.integers(1, max_labels + 1, size=n)
    keys = np.log(topic_probs[topics]) + rng.gumbel(size=(n, topic_probs.shape[1]))
    ranked = np.argsort(-keys, axis=1)[:, :max_labels]
    y = np.zeros((n, topic_probs.shape[1]), bool)
    np.put_along_axis(y, ranked, np.arange(max_labels)[None, :] < sizes[:, None], axis=1)
    return y


def _damaged_file(paths: Dict[str, str], rows: Dict[str, int]) -> Optional[str]:
    """What is wrong with a generated benchmark whose manifest lists ``rows`` per HDF5 file, or
    None when every file is readable with the rows the manifest lists."""
    for key, n in rows.items():
        try:
            f, feats, _ = open_feature_file(paths[key])
        except (OSError, KeyError, ValueError) as e:
            return str(e)
        with f:
            if feats.shape[0] != n:
                return f"{paths[key]} has {feats.shape[0]} rows, the manifest lists {n}"
    for key in ("class_list", "seen_classes", "unseen_classes"):
        if not os.path.isfile(paths[key]):
            return f"{paths[key]} is missing"
    try:
        np.load(paths["embeddings"], mmap_mode="r")
    except (OSError, ValueError) as e:
        return f"{paths['embeddings']} is not readable ({e})"
    return None


def _write_h5(path: str, feats: np.ndarray, y: np.ndarray, signed: bool) -> None:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("features", data=feats.astype(np.float32))
        f.create_dataset("labels", data=(2 * y.astype(np.int8) - 1) if signed else y.astype(np.int8))
    write_bytes(path, buf.getvalue())


def _write_lines(path: str, lines) -> None:
    write_text(path, "".join(f"{x}\n" for x in lines))


def write_synthetic_benchmark(out_dir: str, spec: SyntheticBenchmarkSpec) -> Dict[str, str]:
    """Generate the benchmark of ``spec`` into ``out_dir``, deterministically from ``spec.seed``.

    A complete benchmark of the same spec already in ``out_dir`` is reused as is; one whose files
    are damaged (e.g. a truncated HDF5 file) is generated again.

    Returns:
        the file paths (:func:`synthetic_benchmark_paths`).
    """
    paths = synthetic_benchmark_paths(out_dir)
    spec_dict = dataclasses.asdict(spec)
    if os.path.isfile(paths["manifest"]):
        with open(paths["manifest"]) as f:
            manifest = json.load(f)
        if manifest.get("spec") == spec_dict:
            damaged = _damaged_file(paths, manifest["rows"])
            if damaged is None:
                return paths
            logger.warning("synthetic benchmark in %s: %s; generating it again", out_dir, damaged)
            os.remove(paths["manifest"])
    if min(spec.num_seen, spec.num_unseen, spec.max_labels, spec.num_topics) < 1:
        raise ValueError(f"num_seen, num_unseen, max_labels and num_topics must be >= 1: {spec}")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    S, U = spec.num_seen, spec.num_unseen
    emb = rng.normal(size=(S + U, spec.embedding_dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    proj = rng.normal(size=(spec.embedding_dim, spec.feature_dim))
    protos = emb @ proj + spec.prototype_noise * rng.normal(size=(S + U, spec.feature_dim))
    topic_probs = rng.dirichlet(np.full(S + U, 0.3), size=spec.num_topics) + 1e-4
    topic_probs /= topic_probs.sum(axis=1, keepdims=True)

    needed = spec.num_train + spec.num_zsl_test + spec.num_gzsl_test
    y = _sample_label_sets(rng, topic_probs, 4 * needed, spec.max_labels)
    has_unseen = y[:, S:].any(axis=1)
    seen_only, with_unseen = np.flatnonzero(~has_unseen), np.flatnonzero(has_unseen)
    if len(seen_only) < spec.num_train or len(with_unseen) < spec.num_zsl_test:
        raise ValueError(f"the sampled images give {len(seen_only)} seen-only / {len(with_unseen)} "
                         f"unseen-containing images, fewer than the {spec.num_train} / "
                         f"{spec.num_zsl_test} asked for: lower num_unseen or the split sizes")
    train_rows = seen_only[:spec.num_train]
    zsl_rows = with_unseen[:spec.num_zsl_test]
    rest = np.setdiff1d(np.arange(len(y)), np.concatenate([train_rows, zsl_rows]))
    gzsl_rows = rng.permutation(rest)[:spec.num_gzsl_test]
    rows = np.concatenate([train_rows, zsl_rows, gzsl_rows])
    feats = y[rows].astype(np.float64) @ protos + spec.feature_noise * rng.normal(
        size=(len(rows), spec.feature_dim))
    n_tr, n_zsl = len(train_rows), len(zsl_rows)

    names = [f"seen{i:03d}" for i in range(S)] + [f"unseen{j:03d}" for j in range(U)]
    _write_h5(paths["train"], feats[:n_tr], y[train_rows][:, :S], spec.signed_labels)
    _write_h5(paths["zsl_test"], feats[n_tr:n_tr + n_zsl], y[zsl_rows][:, S:], spec.signed_labels)
    _write_h5(paths["gzsl_test"], feats[n_tr + n_zsl:], y[gzsl_rows], spec.signed_labels)
    with atomic_file(paths["embeddings"]) as f:
        np.save(f, emb.astype(np.float32))
    _write_lines(paths["class_list"], names)
    _write_lines(paths["seen_classes"], names[:S])
    _write_lines(paths["unseen_classes"], names[S:])
    manifest = {"spec": spec_dict, "rows": {"train": n_tr, "zsl_test": n_zsl,
                                            "gzsl_test": len(gzsl_rows)}}
    write_json(paths["manifest"], manifest)
    return paths
