"""On-disk RoI feature bank: labelled box features in HDF5 shards, written incrementally.

Layout of one shard ``<bank_dir>/shard_rank<r>.h5`` (one per data-parallel rank):
  * ``features``  (n, d) float16, chunked and resizable (box-head outputs are post-ReLU and
    small; float16 halves disk and memory for COCO-sized banks),
  * ``labels``    (n,) int32: contiguous class id, ``num_classes`` for background,
  * ``image_ids`` (n,) int64: source image of each row,
  * ``done_images`` (m,) int64: every image already processed (also those that gave no row),
  * attrs ``committed_rows`` / ``committed_images``: what the last completed flush wrote.

Writes are committed every ``flush_every`` images: rows first, then the counters. A run killed
mid-flush leaves rows past ``committed_rows`` that the next open truncates, so extraction
resumes from the last commit with nothing duplicated (see :func:`done_image_ids`).
"""
import glob
import json
import os
from typing import List, Sequence

import h5py
import numpy as np
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

SHARD_PATTERN = "shard_rank*.h5"


def shard_path(bank_dir: str, rank: int) -> str:
    return os.path.join(bank_dir, f"shard_rank{rank}.h5")


def _append(ds: h5py.Dataset, start: int, values: np.ndarray) -> None:
    ds.resize(start + len(values), axis=0)
    ds[start:] = values


def _open_shard(path: str, feature_dim: int, class_names: Sequence[str]) -> h5py.File:
    """Open (or create) a shard for appending, dropping rows past the last commit."""
    f = h5py.File(path, "a")
    if "features" not in f:
        f.create_dataset("features", (0, feature_dim), maxshape=(None, feature_dim),
                         dtype="float16", chunks=(1024, feature_dim))
        for name, dtype in (("labels", "int32"), ("image_ids", "int64"), ("done_images", "int64")):
            f.create_dataset(name, (0,), maxshape=(None,), dtype=dtype, chunks=(8192,))
        f.attrs.update(committed_rows=0, committed_images=0, class_names=json.dumps(list(class_names)))
    if f["features"].shape[1] != feature_dim:
        raise ValueError(f"{path}: feature dim {f['features'].shape[1]} != model's {feature_dim}")
    rows, images = int(f.attrs["committed_rows"]), int(f.attrs["committed_images"])
    for name in ("features", "labels", "image_ids"):
        f[name].resize(rows, axis=0)
    f["done_images"].resize(images, axis=0)
    return f


def done_image_ids(bank_dir: str) -> set:
    """Ids of images whose features are committed in any shard of ``bank_dir``."""
    done = set()
    for path in glob.glob(os.path.join(bank_dir, SHARD_PATTERN)):
        with h5py.File(path, "r") as f:
            done.update(f["done_images"][: int(f.attrs["committed_images"])].tolist())
    return done


class FeatureBankWriter(DatasetEvaluator):
    """A ``DatasetEvaluator`` that appends :class:`RoIFeatureExtractor` outputs to this rank's shard.

    Used with detectron2's ``inference_on_dataset`` so extraction shows progress and shards
    across ranks under ``launch``.
    """

    def __init__(self, bank_dir: str, feature_dim: int, class_names: Sequence[str], flush_every: int = 32):
        self.bank_dir = bank_dir
        self.feature_dim = feature_dim
        self.class_names = list(class_names)
        self.flush_every = flush_every
        self._file = None
        self._buffer: List[dict] = []

    def reset(self):
        os.makedirs(self.bank_dir, exist_ok=True)
        self._file = _open_shard(shard_path(self.bank_dir, comm.get_rank()), self.feature_dim,
                                 self.class_names)
        self._buffer = []

    def process(self, inputs, outputs):
        self._buffer.extend(outputs)
        if len(self._buffer) >= self.flush_every:
            self._flush()

    def _flush(self):
        if not self._buffer:
            return
        f, rows, images = self._file, int(self._file.attrs["committed_rows"]), int(self._file.attrs["committed_images"])
        feats = np.concatenate([o["features"].numpy() for o in self._buffer]).astype(np.float16)
        if not np.isfinite(feats).all():
            raise FloatingPointError(f"non-finite RoI features while writing {f.filename}")
        labels = np.concatenate([o["labels"].numpy() for o in self._buffer]).astype(np.int32)
        ids = np.array([o["image_id"] for o in self._buffer], dtype=np.int64)
        row_ids = np.repeat(ids, [len(o["labels"]) for o in self._buffer])
        _append(f["features"], rows, feats)
        _append(f["labels"], rows, labels)
        _append(f["image_ids"], rows, row_ids)
        _append(f["done_images"], images, ids)
        f.flush()
        f.attrs.update(committed_rows=rows + len(labels), committed_images=images + len(ids))
        f.flush()
        self._buffer = []

    def evaluate(self):
        self._flush()
        self._file.close()
        self._file = None
        comm.synchronize()
        return {}


class FeatureBank:
    """Read-only view of all shards of a bank: labels in memory, features loaded on demand.

    Attributes:
        labels: (n,) int64, class id or ``num_classes`` for background.
        image_ids: (n,) int64, the source image of each row.
        class_names: the detector's classes (background excluded).
    """

    def __init__(self, bank_dir: str):
        paths = sorted(glob.glob(os.path.join(bank_dir, SHARD_PATTERN)))
        if not paths:
            raise FileNotFoundError(f"no RoI feature bank shards ({SHARD_PATTERN}) in {bank_dir}")
        self.paths = paths
        labels, image_ids, self._rows = [], [], []
        for path in paths:
            with h5py.File(path, "r") as f:
                n = int(f.attrs["committed_rows"])
                labels.append(f["labels"][:n].astype(np.int64))
                image_ids.append(f["image_ids"][:n])
                self._rows.append(n)
                self.feature_dim = f["features"].shape[1]
                self.class_names = json.loads(f.attrs["class_names"])
        self.labels = np.concatenate(labels)
        self.image_ids = np.concatenate(image_ids)
        self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, rows: np.ndarray) -> np.ndarray:
        """Features (len(rows), d) float32 of the given global row indices (sorted output order = rows order)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.feature_dim), dtype=np.float32)
        offsets = np.cumsum([0] + self._rows)
        for s, path in enumerate(self.paths):  # one read per shard, not per row
            sel = np.nonzero((rows >= offsets[s]) & (rows < offsets[s + 1]))[0]
            if len(sel):
                local = rows[sel] - offsets[s]
                order = np.argsort(local)
                with h5py.File(path, "r") as f:
                    out[sel[order]] = f["features"][local[order]]
        return out
