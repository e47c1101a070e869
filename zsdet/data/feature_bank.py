"""On-disk RoI feature bank: labelled box features in immutable HDF5 part files.

A bank is a directory of parts ``part_rank<r>_<seq>.h5`` (``seq``: 6 digits, per data-parallel
rank ``r``). Every flush of :class:`FeatureBankWriter` writes ONE new part:

* ``features``    (n, d) float16 (box-head outputs are post-ReLU and small), contiguous and
  uncompressed: 2 KiB a row at d = 1024 (``benchmarks/bench_roi_bank.py --compression`` weighs
  the alternatives),
* ``labels``      (n,) int32: contiguous class id, ``num_classes`` for background,
* ``image_ids``   (n,) int64: source image of each row,
* ``done_images`` (m,) int64: every image of this flush (also those that gave no row),
* attrs ``class_names`` (json list, background excluded).

Rows are stored foreground first, then background, so the streamed readers read the foreground
rows as contiguous ranges. A part is built in memory and reaches the disk through
:func:`zsdet.utils.io.write_bytes`: a part either exists whole or not at all, a kill or a full disk
(an ``OSError`` naming the part) never damages the committed parts, and a rerun resumes after the
images they hold (:func:`done_image_ids`). The HDF5 library never writes to the bank directory
itself, so a failing disk cannot leave it with half-updated metadata.
"""
import errno
import glob
import io
import json
import logging
import os
import re
from typing import Dict, List, Optional, Sequence

import h5py
import numpy as np
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..utils.io import set_aside, write_bytes

logger = logging.getLogger(__name__)

PART_PATTERN = "part_rank*_*.h5"
_PART_NAME = re.compile(r"part_rank(\d+)_(\d+)\.h5$")
LEGACY_PATTERN = "shard_rank*.h5"  # the former single-file-per-rank layout
COMPLETE = "COMPLETE"  # marker file of a finished bank (written by the pipeline's features stage)
CHUNK_ROWS = 256  # HDF5 chunk of compressed ``features`` (512 KiB at d = 1024), and the default read block


def part_path(bank_dir: str, rank: int, seq: int) -> str:
    return os.path.join(bank_dir, f"part_rank{rank}_{seq:06d}.h5")


def list_parts(bank_dir: str) -> List[str]:
    """Committed parts of ``bank_dir`` in (rank, seq) order; refuses a bank of the old layout."""
    legacy = sorted(glob.glob(os.path.join(bank_dir, LEGACY_PATTERN)))
    if legacy:
        raise ValueError(f"{legacy[0]} is a RoI bank shard of an older zsdet layout; delete {bank_dir} "
                         "and rerun the 'features' stage")
    paths = [p for p in glob.glob(os.path.join(bank_dir, PART_PATTERN)) if _PART_NAME.search(p)]
    return sorted(paths, key=lambda p: tuple(int(g) for g in _PART_NAME.search(p).groups()))


def part_bytes(features: np.ndarray, labels: np.ndarray, image_ids: np.ndarray, done_images: np.ndarray,
               class_names: Sequence[str], compression=None) -> bytes:
    """One part file, built in memory: rows (n, d) / (n,) / (n,) and the (m,) processed images.

    Rows are reordered foreground first (stable); ``compression`` is h5py's (None, "lzf", "gzip").
    """
    feats = np.asarray(features, dtype=np.float16)
    labels = np.asarray(labels, dtype=np.int32)
    order = np.argsort(labels >= len(class_names), kind="stable")
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        opts = {}  # uncompressed: contiguous layout (a partly filled chunk would waste its rest)
        if compression and len(feats):
            opts = dict(chunks=(min(CHUNK_ROWS, len(feats)), feats.shape[1]), compression=compression,
                        compression_opts=1 if compression == "gzip" else None)
        f.create_dataset("features", data=feats[order], **opts)
        f.create_dataset("labels", data=labels[order])
        f.create_dataset("image_ids", data=np.asarray(image_ids, dtype=np.int64)[order])
        f.create_dataset("done_images", data=np.asarray(done_images, dtype=np.int64))
        f.attrs["class_names"] = json.dumps(list(class_names))
    return buf.getvalue()


def commit_part(path: str, data: bytes) -> None:
    """Write the part ``data`` to ``path`` atomically.

    Raises:
        OSError: the write failed (e.g. ``ENOSPC``); names the part, nothing is left behind.
    """
    write_bytes(path, data, "RoI bank part", "the parts written before it are complete and kept: fix the "
                "cause (e.g. free space) and rerun, extraction continues after the images they hold")


class PartUnavailable(OSError):
    """The system could not read a committed part (EIO, EACCES, ESTALE, ...): the file may well be
    intact, so it is never set aside; the error names it."""


def _system_errno(error: OSError) -> Optional[int]:
    """The errno of an h5py error: its own, or the one HDF5 writes into its message
    (``errno = 5``); None for a file the system read but HDF5 found damaged."""
    if error.errno:
        return error.errno
    found = re.search(r"errno = (\d+)", str(error))
    return int(found.group(1)) if found and int(found.group(1)) else None


def _unavailable(path: str, error: OSError, code: int) -> PartUnavailable:
    return PartUnavailable(code, f"RoI bank part {path} could not be read ({errno.errorcode.get(code, code)}: "
                           f"{os.strerror(code)}); it is left as it is (the file may be intact): check the file "
                           f"system or its permissions and rerun ({error})")


def _open_part(path: str) -> h5py.File:
    """Open a committed part for reading.

    Raises:
        ValueError: the part is proven damaged (the system read it, but it is no complete HDF5 part:
            bad signature, truncated, datasets missing); names it.
        PartUnavailable: the system could not read it (a transient or permission error); names it.
    """
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        code = _system_errno(e)
        if code is not None:
            raise _unavailable(path, e, code) from e
        raise ValueError(f"RoI bank part {path} is unreadable ({e}); rerun the 'features' stage: it sets the "
                         "part aside and re-extracts its images") from e
    missing = {"features", "labels", "image_ids", "done_images"} - set(f.keys())
    if missing:
        f.close()
        raise ValueError(f"{path} is not a RoI bank part (missing datasets {sorted(missing)})")
    return f


def _set_aside(path: str, error: Exception) -> None:
    """Warn about a damaged part; rank 0 renames it ``*.corrupt`` (its images are extracted again)."""
    logger.warning("%s -- setting it aside as %s.corrupt; its images are extracted again", error, path)
    if comm.is_main_process() and os.path.exists(path):
        set_aside(path, ".corrupt")


def done_image_ids(bank_dir: str) -> set:
    """Ids of images committed in the readable parts of ``bank_dir`` (damaged ones: :func:`_set_aside`;
    a part the system cannot read raises :class:`PartUnavailable`)."""
    done = set()
    for path in list_parts(bank_dir):
        try:
            with _open_part(path) as f:
                done.update(f["done_images"][:].tolist())
        except ValueError as e:
            _set_aside(path, e)
    return done


def bank_is_complete(bank_dir: str) -> bool:
    """Whether the ``features`` stage finished (``COMPLETE`` marker) and every part is readable.

    A damaged part (e.g. truncated by a copy) is named in a warning and set aside, and the marker
    removed, so that the stage runs again and re-extracts just that part's images.
    """
    marker = os.path.join(bank_dir, COMPLETE)
    if not os.path.isfile(marker):
        return False
    complete = True
    for path in list_parts(bank_dir):
        try:
            _open_part(path).close()
        except ValueError as e:
            _set_aside(path, e)
            complete = False
    if not complete and comm.is_main_process():
        os.remove(marker)
    return complete


def coverage_problem(bank_dir: str, image_ids: Sequence[int], file_names: Dict[int, str]) -> Optional[str]:
    """None when every image of ``image_ids`` is in exactly one part of ``bank_dir`` (``done_images``)
    and no other image is, else a message naming (up to 5 of each) the missing images with their
    files, the images committed twice with their parts, and the images foreign to ``image_ids``."""
    parts = list_parts(bank_dir)
    done, part_of = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for p, path in enumerate(parts):
        with _open_part(path) as f:
            done.append(f["done_images"][:])
        part_of.append(np.full(len(done[-1]), p))
    done, part_of = np.concatenate(done), np.concatenate(part_of)
    expected = np.asarray(list(image_ids), dtype=np.int64)
    ids, counts = np.unique(done, return_counts=True)
    missing = np.setdiff1d(expected, ids)
    twice = ids[counts > 1]
    foreign = np.setdiff1d(ids, expected)
    if not (len(missing) or len(twice) or len(foreign)):
        return None
    problems = []
    if len(missing):
        problems.append(f"{len(missing)} training images are in no part, e.g. "
                        + ", ".join(f"{i} ({file_names.get(i, '?')})" for i in missing[:5].tolist()))
    if len(twice):
        where = [f"{i} in {', '.join(os.path.basename(parts[p]) for p in part_of[done == i])}"
                 for i in twice[:5].tolist()]
        problems.append(f"{len(twice)} images are in several parts, e.g. " + "; ".join(where))
    if len(foreign):
        problems.append(f"{len(foreign)} images of the bank are not in the training set, e.g. "
                        f"{foreign[:5].tolist()}")
    return (f"RoI bank {bank_dir} does not hold every training image exactly once: {'; '.join(problems)}. "
            f"{COMPLETE} was not written: delete the parts named (their images are extracted again) or the "
            "whole bank, and rerun the 'features' stage")


class FeatureBankWriter(DatasetEvaluator):
    """A ``DatasetEvaluator`` that writes :class:`RoIFeatureExtractor` outputs as parts of this rank.

    Used with detectron2's ``inference_on_dataset`` so extraction shows progress and shards
    across ranks under ``launch``. Every ``flush_every`` images one part is committed.
    """

    def __init__(self, bank_dir: str, feature_dim: int, class_names: Sequence[str], flush_every: int = 32):
        self.bank_dir = bank_dir
        self.feature_dim = feature_dim
        self.class_names = list(class_names)
        self.flush_every = flush_every
        self._buffer: List[dict] = []
        self._next_seq = 0

    def reset(self):
        os.makedirs(self.bank_dir, exist_ok=True)
        rank = comm.get_rank()
        for tmp in glob.glob(os.path.join(self.bank_dir, f"part_rank{rank}_*.h5.tmp")):
            os.remove(tmp)  # left by a kill between write and rename
        seqs = [-1]
        for path in list_parts(self.bank_dir):
            r, seq = (int(g) for g in _PART_NAME.search(path).groups())
            if r == rank:
                seqs.append(seq)
            try:
                f = _open_part(path)
            except ValueError:  # unreadable: set aside by done_image_ids, its images are redone
                continue
            with f:
                if f["features"].shape[1] != self.feature_dim:
                    raise ValueError(f"{path}: feature dim {f['features'].shape[1]} != model's {self.feature_dim} "
                                     "(a bank of another detector? use a new OUTPUT_DIR or delete the bank)")
        self._next_seq = max(seqs) + 1
        self._buffer = []

    def process(self, inputs, outputs):
        self._buffer.extend(outputs)
        if len(self._buffer) >= self.flush_every:
            self._flush()

    def _flush(self):
        if not self._buffer:
            return
        path = part_path(self.bank_dir, comm.get_rank(), self._next_seq)
        feats = np.concatenate([o["features"].numpy() for o in self._buffer]).astype(np.float16)
        feats = feats.reshape(-1, self.feature_dim)
        if not np.isfinite(feats).all():
            raise FloatingPointError(f"non-finite RoI features while writing {path}")
        labels = np.concatenate([o["labels"].numpy() for o in self._buffer])
        ids = np.array([o["image_id"] for o in self._buffer], dtype=np.int64)
        row_ids = np.repeat(ids, [len(o["labels"]) for o in self._buffer])
        commit_part(path, part_bytes(feats, labels, row_ids, ids, self.class_names))
        self._next_seq += 1
        self._buffer = []

    def evaluate(self):
        self._flush()
        comm.synchronize()
        return {}


class FeatureBank:
    """Read-only index of all parts of a bank: labels and image ids in memory, features on demand.

    Attributes:
        paths: the parts, in global row order; ``offsets`` (P + 1,) their first global rows.
        labels: (n,) int32, class id or ``num_classes`` for background (4 bytes a row: 24 MB at 6M rows).
        image_ids: (n,) int64, the source image of each row (48 MB at 6M rows).
        class_names: the detector's classes (background excluded); ``feature_dim``: d.

    Raises:
        FileNotFoundError: no part in ``bank_dir``. ValueError: an unreadable part, parts of
        different feature dims or class lists (a part of another detector), a bank without rows;
        each names the file.
    """

    def __init__(self, bank_dir: str):
        self.bank_dir = bank_dir
        self.paths = list_parts(bank_dir) if os.path.isdir(bank_dir) else []
        if not self.paths:
            raise FileNotFoundError(f"no RoI feature bank parts ({PART_PATTERN}) in {bank_dir}; run the "
                                    "'features' stage")
        labels, image_ids, sizes = [], [], []
        first: Dict = {}
        for path in self.paths:
            with _open_part(path) as f:
                meta = {"feature dim": int(f["features"].shape[1]), "classes": json.loads(f.attrs["class_names"])}
                for key, value in meta.items():
                    first.setdefault(key, (value, path))
                    if value != first[key][0]:
                        raise ValueError(f"RoI bank part {path} has {key} {value} but {first[key][1]} has "
                                         f"{first[key][0]}: parts of different detectors; delete {bank_dir} "
                                         "and rerun the 'features' stage")
                labels.append(f["labels"][:])
                image_ids.append(f["image_ids"][:])
                sizes.append(len(labels[-1]))
        self.feature_dim = first["feature dim"][0]
        self.class_names = first["classes"][0]
        self.num_classes = len(self.class_names)
        self.labels = np.concatenate(labels).astype(np.int32)
        self.image_ids = np.concatenate(image_ids)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if not len(self.labels):
            raise ValueError(f"RoI bank {bank_dir} is empty: its {len(self.paths)} parts hold no RoI "
                             "(no training image gave a foreground or background box)")

    def __len__(self) -> int:
        return len(self.labels)

    def foreground_rows(self) -> np.ndarray:
        return np.nonzero(self.labels < self.num_classes)[0]

    def check_classes(self, class_ids: Sequence[int], rows: np.ndarray, what: str) -> None:
        """Raise ``ValueError`` naming the bank and the classes of ``class_ids`` without a row in ``rows``."""
        present = np.bincount(self.labels[rows], minlength=self.num_classes + 1)
        absent = [self.class_names[c] for c in class_ids if present[c] == 0]
        if absent:
            raise ValueError(f"RoI bank {self.bank_dir} has no {what} row of seen class(es) {absent}: the "
                             "generator needs real features of every seen class (were the training images "
                             "or the class list changed after the 'features' stage?)")

    def blocks(self, rows: np.ndarray, block_rows: int) -> np.ndarray:
        """Cut sorted global ``rows`` into read blocks; returns (k + 1,) boundaries into ``rows``.

        A block holds at most ``block_rows`` of the rows, lies in one part and spans at most
        ``4 * block_rows`` bank rows, so it is read with one contiguous HDF5 read of bounded size.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros(1, dtype=np.int64)
        part = np.searchsorted(self.offsets, rows, side="right") - 1
        window = (rows - self.offsets[part]) // (4 * block_rows)
        new_segment = np.ones(len(rows), bool)
        new_segment[1:] = (part[1:] != part[:-1]) | (window[1:] != window[:-1])
        seg_start = np.nonzero(new_segment)[0]
        position = np.arange(len(rows)) - np.repeat(seg_start, np.diff(np.append(seg_start, len(rows))))
        starts = np.nonzero(new_segment | (position % block_rows == 0))[0]
        return np.append(starts, len(rows))

    def reader(self) -> "BankReader":
        return BankReader(self)

    def load(self, rows: np.ndarray, block_rows: int = CHUNK_ROWS, out: np.ndarray = None) -> np.ndarray:
        """Features (len(rows), d) float32 of the given global rows, in the order given (into ``out``
        when given). Reads block by block (:meth:`blocks`): temporary memory is one block."""
        rows = np.asarray(rows, dtype=np.int64)
        in_order = bool((np.diff(rows) >= 0).all())
        order = np.arange(len(rows)) if in_order else np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        out = np.empty((len(rows), self.feature_dim), dtype=np.float32) if out is None else out
        bounds = self.blocks(sorted_rows, block_rows)
        with self.reader() as read:
            for a, b in zip(bounds[:-1], bounds[1:]):
                out[slice(a, b) if in_order else order[a:b]] = read(sorted_rows[a:b])
        return out


class BankReader:
    """Context manager reading features of sorted global rows of one block (:meth:`FeatureBank.blocks`).

    ``reader(rows)`` -> (len(rows), d) float16: one contiguous read of the rows' span, or, when they
    fill less than a quarter of it, a selection of just those rows. Keeps the last part open, so
    consecutive blocks of one part cost one ``open``.
    """

    def __init__(self, bank: FeatureBank):
        self.bank = bank
        self._part, self._file = -1, None
        self._scratch = np.empty((0, bank.feature_dim), np.float16)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            self._file.close()
        self._part, self._file = -1, None

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        part = int(np.searchsorted(self.bank.offsets, rows[0], side="right") - 1)
        if part != self._part:
            self.__exit__()
            self._file, self._part = _open_part(self.bank.paths[part]), part
        local = rows - self.bank.offsets[part]
        first, last = int(local[0]), int(local[-1]) + 1
        try:
            if 4 * len(rows) < last - first:  # sparse: read just the rows (one HDF5 selection)
                unique, inverse = np.unique(local, return_inverse=True)
                return self._file["features"][unique][inverse]
            if len(self._scratch) < last - first:
                self._scratch = np.empty((last - first, self.bank.feature_dim), np.float16)
            span = self._scratch[:last - first]
            self._file["features"].read_direct(span, np.s_[first:last])
        except OSError as e:
            if _system_errno(e) is not None:
                raise _unavailable(self.bank.paths[part], e, _system_errno(e)) from e
            raise ValueError(f"RoI bank part {self.bank.paths[part]}: rows {first}-{last} unreadable ({e}); "
                             "delete the part and rerun the 'features' stage") from e
        return span if len(rows) == last - first else span[local - first]

