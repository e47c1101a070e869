"""A multi-label zero-shot classification benchmark of a config (``cfg.MLZSL``): its classes, class
embeddings and HDF5 feature files.

Class ids: the S seen classes ``[0, S)``, then the U unseen ones ``[S, S + U)``. Mode ``"zsl"``
has a training file (seen labels), a ZSL test file (unseen labels) and a GZSL test file (all
labels); mode ``"standard"`` (all labels seen, paper Table 4) a training and a test file. Relative
paths are read under ``MLZSL.DATA_ROOT`` (default ``$DETECTRON2_DATASETS``); ``zsdet://`` paths
name files shipped in the repository. ``MLZSL.BENCHMARK="synthetic"`` generates its files
(:mod:`.synthetic`) in ``MLZSL.SYNTHETIC.DIR`` (default ``OUTPUT_DIR/synthetic_data``).
"""
import dataclasses
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from detectron2.utils import comm

from ..embeddings import load_class_embeddings, load_nus_wide_glove, read_class_list
from ..shipped import is_shipped, resolve_data_path
from .h5_features import H5FeatureSource
from .synthetic import SyntheticBenchmarkSpec, synthetic_benchmark_paths, write_synthetic_benchmark

__all__ = ["MLZSLBenchmark", "load_benchmark", "open_source", "MODES", "LABEL_SET_CHOICES"]

MODES = ("zsl", "standard")
LABEL_SET_CHOICES = ("singleton", "cooccurrence", "both", "none")
FILE_KEYS = {"zsl": ("TRAIN_FILE", "ZSL_TEST_FILE", "GZSL_TEST_FILE"),
             "standard": ("TRAIN_FILE", "TEST_FILE")}


@dataclasses.dataclass
class MLZSLBenchmark:
    """Classes and files of one run. Class ids: seen ``[0, S)``, then unseen ``[S, S + U)``.

    Attributes:
        name: benchmark name; mode: ``"zsl"`` or ``"standard"``.
        seen_names, unseen_names: class names (``unseen_names`` empty in mode ``"standard"``).
        embeddings: (S + U, a) float32 class embeddings, or None when nothing is synthesized.
        files: config file key (``"TRAIN_FILE"``, ...) -> absolute HDF5 path.
        embeddings_file: the file the embeddings were read from ("" when none).
    """

    name: str
    mode: str
    seen_names: List[str]
    unseen_names: List[str]
    embeddings: Optional[np.ndarray]
    files: Dict[str, str]
    embeddings_file: str = ""

    @property
    def class_names(self) -> List[str]:
        return self.seen_names + self.unseen_names

    def label_columns(self, file_key: str) -> np.ndarray:
        """Class id of each label column of the file of ``file_key`` (the benchmark's layout)."""
        S, C = len(self.seen_names), len(self.class_names)
        return {"TRAIN_FILE": np.arange(S), "ZSL_TEST_FILE": np.arange(S, C),
                "GZSL_TEST_FILE": np.arange(C), "TEST_FILE": np.arange(S)}[file_key]

    def tasks(self) -> Dict[str, str]:
        """Evaluation task -> config key of its test file."""
        if self.mode == "zsl":
            return {"zsl": "ZSL_TEST_FILE", "gzsl": "GZSL_TEST_FILE"}
        return {"standard": "TEST_FILE"}


def _resolve(cfg, path: str) -> str:
    if is_shipped(path):  # zsdet://...: a file shipped in the repository's datasets/
        return resolve_data_path(path)
    root = cfg.MLZSL.DATA_ROOT or os.environ.get("DETECTRON2_DATASETS", "datasets")
    return os.path.abspath(path if os.path.isabs(path) else os.path.join(root, path))


def _synthetic_files(cfg) -> Dict[str, str]:
    """Generate (rank 0) or reuse the synthetic benchmark; returns its paths."""
    s = cfg.MLZSL.SYNTHETIC
    out = s.DIR or os.path.join(cfg.OUTPUT_DIR, "synthetic_data")
    spec = SyntheticBenchmarkSpec(
        num_seen=s.NUM_SEEN, num_unseen=s.NUM_UNSEEN, feature_dim=s.FEATURE_DIM,
        embedding_dim=s.EMBED_DIM, num_train=s.NUM_TRAIN, num_zsl_test=s.NUM_ZSL_TEST,
        num_gzsl_test=s.NUM_GZSL_TEST, max_labels=s.MAX_LABELS, num_topics=s.NUM_TOPICS,
        prototype_noise=s.PROTOTYPE_NOISE, feature_noise=s.FEATURE_NOISE,
        signed_labels=s.SIGNED_LABELS, seed=s.SEED)
    if comm.is_main_process():
        write_synthetic_benchmark(out, spec)
    comm.synchronize()
    return synthetic_benchmark_paths(out)


def _class_names_and_embeddings(cfg, mode: str, need_embeddings: bool
                                ) -> Tuple[List[str], List[str], Optional[np.ndarray]]:
    m = cfg.MLZSL
    emb_path = _resolve(cfg, m.EMBEDDINGS_FILE) if m.EMBEDDINGS_FILE else ""
    if need_embeddings and not emb_path:
        raise ValueError("MLZSL.EMBEDDINGS_FILE is empty: synthesizing features needs class embeddings")
    if (m.EMBEDDINGS_FORMAT == "nus_wide_pickle" and mode == "zsl"
            and not (m.SEEN_CLASSES_FILE or m.UNSEEN_CLASSES_FILE)):
        # the official matrix: seen = tags that are not concepts (tag order), unseen = concepts
        lists = [_resolve(cfg, p) if p else None for p in (m.NUS_WIDE_TAG_LIST, m.NUS_WIDE_CONCEPT_LIST)]
        nus = load_nus_wide_glove(emb_path, *lists, normalize=m.EMBEDDINGS_NORMALIZE)
        seen = nus.seen_names or [f"tag{i:03d}" for i in range(nus.num_seen)]
        unseen = nus.unseen_names or [f"concept{j:02d}" for j in range(len(nus.unseen))]
        return seen, unseen, nus.embeddings
    if not m.SEEN_CLASSES_FILE:
        raise ValueError("MLZSL.SEEN_CLASSES_FILE is empty: the seen class names are needed")
    seen = read_class_list(_resolve(cfg, m.SEEN_CLASSES_FILE))
    unseen = []
    if mode == "zsl":
        if not m.UNSEEN_CLASSES_FILE:
            raise ValueError("MLZSL.UNSEEN_CLASSES_FILE is empty: mode 'zsl' needs the unseen class names")
        unseen = read_class_list(_resolve(cfg, m.UNSEEN_CLASSES_FILE))
    overlap = sorted(set(seen) & set(unseen))
    if overlap:
        raise ValueError(f"classes listed as both seen and unseen: {overlap[:10]}")
    if not need_embeddings:
        return seen, unseen, None
    class_list = _resolve(cfg, m.EMBEDDINGS_CLASS_LIST) if m.EMBEDDINGS_CLASS_LIST else None
    emb = load_class_embeddings(emb_path, seen + unseen, m.EMBEDDINGS_FORMAT, m.EMBEDDINGS_NORMALIZE,
                                class_list=class_list)
    return seen, unseen, emb


def load_benchmark(cfg) -> MLZSLBenchmark:
    """Resolve the benchmark of ``cfg.MLZSL``: class names, embeddings and HDF5 files.

    Raises:
        ValueError: an invalid mode / choice, a missing key, or a synthetic run with file keys set.
        FileNotFoundError / KeyError: missing files or classes without embeddings (named).
    """
    m = cfg.MLZSL
    if m.MODE not in MODES:
        raise ValueError(f"MLZSL.MODE must be one of {MODES}, got {m.MODE!r}")
    if m.SYNTH_LABEL_SETS not in LABEL_SET_CHOICES:
        raise ValueError(f"MLZSL.SYNTH_LABEL_SETS must be one of {LABEL_SET_CHOICES}, "
                         f"got {m.SYNTH_LABEL_SETS!r}")
    if m.MODE == "zsl" and m.SYNTH_LABEL_SETS == "none":
        raise ValueError("MLZSL.SYNTH_LABEL_SETS='none' leaves nothing to train the unseen "
                         "classifiers on; it is only valid with MLZSL.MODE='standard'")
    keys = FILE_KEYS[m.MODE]
    if m.BENCHMARK == "synthetic":
        set_keys = [k for k in FILE_KEYS["zsl"] + FILE_KEYS["standard"] if m[k]]
        if m.MODE != "zsl" or set_keys:
            raise ValueError("the synthetic benchmark generates its own zsl files: use MLZSL.MODE='zsl' "
                             f"and leave {sorted(set(set_keys))} empty")
        paths = _synthetic_files(cfg)
        files = dict(zip(keys, (paths["train"], paths["zsl_test"], paths["gzsl_test"])))
        seen, unseen = read_class_list(paths["seen_classes"]), read_class_list(paths["unseen_classes"])
        emb = load_class_embeddings(paths["embeddings"], seen + unseen, "npy", m.EMBEDDINGS_NORMALIZE)
        return MLZSLBenchmark(m.BENCHMARK, m.MODE, seen, unseen, emb, files, paths["embeddings"])
    missing = [k for k in keys if not m[k]]
    if missing:
        raise ValueError(f"MLZSL.MODE={m.MODE!r} needs the files {['MLZSL.' + k for k in missing]}")
    seen, unseen, emb = _class_names_and_embeddings(cfg, m.MODE, m.SYNTH_LABEL_SETS != "none")
    files = {k: _resolve(cfg, m[k]) for k in keys}
    return MLZSLBenchmark(m.BENCHMARK, m.MODE, seen, unseen, emb, files,
                          _resolve(cfg, m.EMBEDDINGS_FILE) if m.EMBEDDINGS_FILE else "")


def open_source(cfg, bench: MLZSLBenchmark, file_key: str, num_classes: int,
                memory_mb: Optional[float] = None) -> H5FeatureSource:
    """Stream the file of ``file_key``, its label columns mapped into ``num_classes`` class ids,
    holding at most ``memory_mb`` MiB of rows (default ``MLZSL.STREAM_MEMORY_MB``).

    Raises:
        ValueError: the file's label count differs from the benchmark's classes for that file.
    """
    return H5FeatureSource(bench.files[file_key], num_classes=num_classes,
                           column_classes=bench.label_columns(file_key),
                           memory_budget_mb=cfg.MLZSL.STREAM_MEMORY_MB if memory_mb is None else memory_mb,
                           block_rows=cfg.MLZSL.STREAM_BLOCK_ROWS,
                           features_key=cfg.MLZSL.FEATURES_KEY, labels_key=cfg.MLZSL.LABELS_KEY)
