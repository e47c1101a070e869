"""HDF5 multi-label feature files (the LESA / official Generative_MLZSL layout), streamed from disk.

One file per split (seen-train, ZSL-test, GZSL-test), two datasets:
  * ``features``: (n, d) float, e.g. VGG-19 FC7 (d = 4096);
  * ``labels``:   (n, L) numbers in {-1, 0, 1} or {0, 1}. 1 = positive; -1 = verified negative;
    0 = negative in a {0, 1} file but "unknown" in a signed file (Open Images marks verified
    negatives with -1 and leaves unverified labels at 0).
Which class a label column stands for is fixed by the benchmark (e.g. seen-train columns are the
seen classes), not by the file; :class:`H5FeatureSource` maps columns into a class index space.

Streaming: rows are cut into *blocks* of consecutive rows. An epoch permutes the blocks with an RNG
seeded by ``(seed, epoch)``, reads as many blocks as fit the memory budget into two preallocated
buffers (one contiguous HDF5 read per block), permutes the rows of that *group* and yields batches.
The whole file is never resident: memory is the group buffers (at most the budget) plus a batch.
"""
import os
from typing import Iterator, Optional, Sequence, Tuple

import h5py
import numpy as np
import torch

from ..seeded_rng import SPLIT_KEY, derive_seed

__all__ = ["open_feature_file", "H5FeatureSource", "to_signed_labels"]

FEATURES_KEY = "features"
LABELS_KEY = "labels"


def open_feature_file(path: str, features_key: str = FEATURES_KEY,
                      labels_key: str = LABELS_KEY) -> Tuple[h5py.File, h5py.Dataset, h5py.Dataset]:
    """Open ``path`` read-only and check its two datasets.

    Returns:
        (file, features (n, d) dataset, labels (n, L) dataset); the caller closes the file.

    Raises:
        FileNotFoundError: no file at ``path``. KeyError: a dataset is missing (names the file,
        the key and the keys present). ValueError: not a readable HDF5 file (e.g. truncated),
        wrong ranks or row counts.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"feature file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:  # truncated, half-copied or not HDF5 at all
        raise ValueError(f"{path} is not a readable HDF5 file (truncated or not HDF5?): {e}") from e
    try:
        for key in (features_key, labels_key):
            if key not in f:
                raise KeyError(f"{path} has no dataset {key!r} (it has: {sorted(f.keys())})")
        feats, labels = f[features_key], f[labels_key]
        if feats.ndim != 2 or labels.ndim != 2:
            raise ValueError(f"{path}: {features_key!r} and {labels_key!r} must be 2-d, got shapes "
                             f"{feats.shape} and {labels.shape}")
        if feats.shape[0] != labels.shape[0]:
            raise ValueError(f"{path}: {features_key!r} has {feats.shape[0]} rows but "
                             f"{labels_key!r} has {labels.shape[0]}")
    except Exception:
        f.close()
        raise
    return f, feats, labels


def to_signed_labels(labels: np.ndarray, signed: Optional[bool] = None) -> np.ndarray:
    """File labels as int8 in {-1, 0, 1} with 0 meaning "unknown".

    A file without any -1 is a plain {0, 1} multi-hot file: its 0s are negatives and become -1.
    A file with -1s is already signed and is returned unchanged (as int8).

    Args:
        labels: (n, L) labels of a whole file, or a chunk of a file whose encoding is ``signed``.
        signed: whether the file has any -1 (see :meth:`H5FeatureSource.has_negative_labels`);
            None decides from ``labels`` itself, which must then be the whole file.
    """
    y = np.asarray(labels).astype(np.int8)
    signed = bool((y == -1).any()) if signed is None else signed
    return y if signed else 2 * y - 1


class H5FeatureSource:
    """A ``FeatureSource`` streaming one HDF5 feature file in memory-bounded groups of row blocks.

    Args:
        path: HDF5 file in the layout of the module docstring.
        num_classes: C, width of the multi-hot labels it yields (default: the file's L columns).
        column_classes: (L,) class index in [0, C) of each label column (default ``arange(L)``),
            e.g. ``arange(S)`` for a seen-train file inside a seen + unseen index space.
        memory_budget_mb: at most this many MiB of feature + label rows are held at once.
        block_rows: rows per block, the unit of the between-block shuffle and of :meth:`split`
            (capped by the budget).
        features_key, labels_key: dataset names.
        blocks: (k, 2) row ranges ``[start, stop)`` of at most ``block_rows`` rows to restrict the
            source to (what :meth:`split` passes); default: the whole file.

    ``iter_batches(batch_size, epoch, seed)`` yields ``(x (B, d) float32, y (B, C) float32)``
    tensors, ``y`` = 1 where the file's label is 1; the order is a pure function of
    ``(seed, epoch)``. Every row is yielded exactly once per epoch; only the last batch may be short.
    """

    def __init__(self, path: str, *, num_classes: Optional[int] = None,
                 column_classes: Optional[Sequence[int]] = None, memory_budget_mb: float = 256.0,
                 block_rows: int = 256, features_key: str = FEATURES_KEY,
                 labels_key: str = LABELS_KEY, blocks: Optional[np.ndarray] = None):
        self.path, self.features_key, self.labels_key = path, features_key, labels_key
        f, feats, labels = open_feature_file(path, features_key, labels_key)
        with f:
            self.num_rows, self.feature_dim = (int(s) for s in feats.shape)
            self.num_label_columns = int(labels.shape[1])
            self.label_dtype = labels.dtype
        self.column_classes = (np.arange(self.num_label_columns) if column_classes is None
                               else np.asarray(column_classes, dtype=np.int64))
        self.num_classes = self.num_label_columns if num_classes is None else int(num_classes)
        if self.column_classes.shape != (self.num_label_columns,):
            raise ValueError(f"{path}: {labels_key!r} has {self.num_label_columns} columns but "
                             f"{len(self.column_classes)} classes are expected for this file")
        if len(self.column_classes) and not (
                0 <= self.column_classes.min() and self.column_classes.max() < self.num_classes):
            raise ValueError(f"{path}: column classes must lie in [0, {self.num_classes})")
        self.memory_budget_mb = memory_budget_mb
        row_bytes = 4 * self.feature_dim + self.label_dtype.itemsize * self.num_label_columns
        self.group_rows = int(memory_budget_mb * 2 ** 20) // row_bytes
        if self.group_rows < 1:
            raise ValueError(f"memory budget {memory_budget_mb} MiB is below one row of {path} "
                             f"({row_bytes} bytes)")
        self.block_rows = max(1, min(int(block_rows), self.group_rows))
        if blocks is None:
            starts = np.arange(0, self.num_rows, self.block_rows)
            blocks = np.stack([starts, np.minimum(starts + self.block_rows, self.num_rows)], 1)
        self._blocks = np.asarray(blocks, dtype=np.int64).reshape(-1, 2)
        sizes = self._blocks[:, 1] - self._blocks[:, 0]
        if len(sizes) and (sizes.min() < 1 or sizes.max() > self.block_rows
                           or self._blocks.min() < 0 or self._blocks.max() > self.num_rows):
            raise ValueError(f"{path}: blocks must be non-empty row ranges of at most "
                             f"{self.block_rows} rows inside [0, {self.num_rows})")

    def __len__(self) -> int:
        return int((self._blocks[:, 1] - self._blocks[:, 0]).sum())

    def split(self, fraction: float, seed: int) -> Tuple["H5FeatureSource", "H5FeatureSource"]:
        """Random ``(train, val)`` split of whole blocks, about ``fraction`` of them for ``val``."""
        n_val = int(round(fraction * len(self._blocks)))
        if not 0 < n_val < len(self._blocks):
            raise ValueError(f"{self.path}: validation fraction {fraction} of {len(self._blocks)} "
                             f"blocks of {self.block_rows} rows leaves an empty split")
        rng = np.random.default_rng(derive_seed(seed, SPLIT_KEY))
        is_val = np.zeros(len(self._blocks), bool)
        is_val[rng.permutation(len(self._blocks))[:n_val]] = True
        return self._with_blocks(self._blocks[~is_val]), self._with_blocks(self._blocks[is_val])

    def _with_blocks(self, blocks: np.ndarray) -> "H5FeatureSource":
        return H5FeatureSource(
            self.path, num_classes=self.num_classes, column_classes=self.column_classes,
            memory_budget_mb=self.memory_budget_mb, block_rows=self.block_rows,
            features_key=self.features_key, labels_key=self.labels_key, blocks=blocks)

    # ---------------------------------------------------------------- reading
    def _groups(self, block_order: np.ndarray) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """Fill the buffers with consecutive runs of ``block_order`` that fit ``group_rows``.

        Yields views ``(features (m, d) float32, labels (m, L) file dtype)`` valid until the next
        step; rows appear in ascending file order within a group.
        """
        # Every block has <= block_rows <= group_rows rows, so this many blocks always fit a group.
        per_group = self.group_rows // self.block_rows
        feat_buf = np.empty((min(self.group_rows, len(self)), self.feature_dim), np.float32)
        lab_buf = np.empty((len(feat_buf), self.num_label_columns), self.label_dtype)
        f, feats, labels = open_feature_file(self.path, self.features_key, self.labels_key)
        with f:
            for first in range(0, len(block_order), per_group):
                blocks = self._blocks[np.sort(block_order[first:first + per_group])]
                offset = 0
                for start, stop in blocks:  # one contiguous read per block
                    dest = np.s_[offset:offset + stop - start]
                    feats.read_direct(feat_buf, np.s_[start:stop], dest)
                    labels.read_direct(lab_buf, np.s_[start:stop], dest)
                    offset += stop - start
                self._check_group(feat_buf[:offset], lab_buf[:offset], blocks)
                yield feat_buf[:offset], lab_buf[:offset]

    def _check_group(self, x: np.ndarray, lab: np.ndarray, blocks: np.ndarray) -> None:
        """Raise ``ValueError`` naming the file row of the first non-finite feature / bad label."""
        def file_row(i: int) -> int:  # buffer row -> file row
            ends = np.cumsum(blocks[:, 1] - blocks[:, 0])
            b = int(np.searchsorted(ends, i, side="right"))
            return int(blocks[b, 0] + i - (ends[b - 1] if b else 0))

        # row-wise min / max: (m,) temporaries only (NaN propagates through both)
        bad_x = ~(np.isfinite(x.min(axis=1)) & np.isfinite(x.max(axis=1)))
        if bad_x.any():
            raise ValueError(f"{self.path}: {self.features_key!r} row {file_row(bad_x.argmax())} "
                             "contains NaN or inf")
        bad_y = (lab.min(axis=1) < -1) | (lab.max(axis=1) > 1)
        if lab.dtype.kind == "f":  # float labels must also be whole numbers (and not NaN)
            bad_y |= ~(lab == np.trunc(lab)).all(axis=1)
        if bad_y.any():
            r = bad_y.argmax()
            raise ValueError(f"{self.path}: {self.labels_key!r} row {file_row(r)} has values "
                             f"{sorted(set(np.unique(lab[r]).tolist()) - {-1, 0, 1})} outside {{-1, 0, 1}}")

    def multi_hot(self, lab: np.ndarray) -> torch.Tensor:
        """File labels (m, L) -> (m, C) float32 multi-hot: 1 where the label is 1, in its column's class."""
        y = np.zeros((len(lab), self.num_classes), np.float32)
        y[:, self.column_classes] = lab == 1
        return torch.from_numpy(y)

    # ---------------------------------------------------------------- FeatureSource API
    def iter_batches(self, batch_size: int, epoch: int, seed: int
                     ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches ``(x (B, d) float32, y (B, C) float32 multi-hot)`` of one epoch."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rng = np.random.default_rng(derive_seed(seed, epoch))
        carry_x = carry_y = None  # rows left over from the previous group (< batch_size)
        for x, lab in self._groups(rng.permutation(len(self._blocks))):
            perm = rng.permutation(len(x))
            start = 0
            if carry_x is not None:
                take = perm[:batch_size - len(carry_x)]
                carry_x = np.concatenate([carry_x, x[take]])
                carry_y = np.concatenate([carry_y, lab[take]])
                start = len(take)
                if len(carry_x) < batch_size:
                    continue
                yield torch.from_numpy(carry_x), self.multi_hot(carry_y)
                carry_x = carry_y = None
            for b in range(start, len(x) - batch_size + 1, batch_size):
                idx = perm[b:b + batch_size]
                yield torch.from_numpy(x[idx]), self.multi_hot(lab[idx])
            rest = perm[start + (len(x) - start) // batch_size * batch_size:]
            if len(rest):
                carry_x, carry_y = x[rest], lab[rest]
        if carry_x is not None:
            yield torch.from_numpy(carry_x), self.multi_hot(carry_y)

    # ---------------------------------------------------------------- inference / evaluation
    def has_negative_labels(self) -> bool:
        """Whether any label of the source's rows is -1 (a signed file, see :func:`to_signed_labels`);
        reads the labels only, one block of rows at a time."""
        f, _, labels = open_feature_file(self.path, self.features_key, self.labels_key)
        with f:
            return any(bool((labels[start:stop] == -1).any()) for start, stop in self._blocks)

    def iter_ordered(self) -> Iterator[Tuple[int, np.ndarray, np.ndarray]]:
        """Groups in file order: ``(offset, features (m, d) float32, labels (m, L))`` views, where
        ``offset`` is the position of the group's first row among the source's rows."""
        row = 0
        for x, lab in self._groups(np.arange(len(self._blocks))):
            yield row, x, lab
            row += len(lab)
