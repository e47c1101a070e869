"""The HDF5 feature files of the classification benchmarks: layout checks, label encodings,
the streamed FeatureSource (coverage, determinism, split) and its memory bound."""
import tracemalloc

import h5py
import numpy as np
import pytest
import torch

from zsdet.data.mlzsl import ConcatSource, H5FeatureSource, open_feature_file, to_signed_labels
from zsdet.synthesis import TensorFeatureSource


def write_file(path, feats, labels, **extra):
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=np.asarray(feats, np.float32))
        f.create_dataset("labels", data=labels)
        for k, v in extra.items():
            f.create_dataset(k, data=v)
    return str(path)


def row_id_file(path, n, d=4, num_labels=3, seed=0):
    """Features whose column 0 is the row id, random {0, 1} labels."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, d)).astype(np.float32)
    feats[:, 0] = np.arange(n)
    labels = (rng.random((n, num_labels)) < 0.4).astype(np.int8)
    return write_file(path, feats, labels), feats, labels


def all_rows(source, batch_size, epoch=0, seed=0):
    batches = list(source.iter_batches(batch_size, epoch, seed))
    ids = torch.cat([x[:, 0] for x, _ in batches]).long()
    return batches, ids


@pytest.mark.parametrize("signed", [False, True], ids=["labels01", "labels-101"])
def test_labels_map_positives_into_column_classes(tmp_path, signed):
    labels = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 0]], np.int8)
    if signed:  # verified negatives -1, one unknown 0 per row
        labels = np.where(labels == 1, 1, -1).astype(np.int8)
        labels[[0, 1, 2, 3], [1, 0, 0, 2]] = 0
    feats = np.arange(4)[:, None] * np.ones((1, 5))
    path = write_file(tmp_path / "f.h5", feats, labels)
    # a seen-train style file: its 3 columns are classes 2, 3, 4 of a 6-class space
    source = H5FeatureSource(path, num_classes=6, column_classes=[2, 3, 4])
    (x, y), = source.iter_batches(4, 0, 0)
    order = x[:, 0].long()
    expected = np.zeros((4, 6), np.float32)
    expected[:, 2:5] = labels == 1
    assert torch.equal(y, torch.from_numpy(expected)[order])
    assert source.feature_dim == 5 and source.num_classes == 6 and len(source) == 4


def test_to_signed_labels_reads_the_file_encoding():
    plain = np.array([[1, 0], [0, 1]], np.int8)
    assert to_signed_labels(plain).tolist() == [[1, -1], [-1, 1]]  # {0, 1}: 0 is a negative
    signed = np.array([[1, 0], [-1, 1]], np.int8)
    assert to_signed_labels(signed).tolist() == [[1, 0], [-1, 1]]  # {-1, 0, 1}: 0 stays unknown
    assert to_signed_labels(plain.astype(np.float32)).dtype == np.int8


def test_epoch_yields_every_row_once_in_a_seeded_order(tmp_path):
    path, _, _ = row_id_file(tmp_path / "f.h5", n=103)
    source = H5FeatureSource(path, block_rows=8, memory_budget_mb=20 * 19 / 2 ** 20)  # 20 rows of 19 B
    assert source.group_rows == 20 and source.block_rows == 8
    batches, ids = all_rows(source, batch_size=7)
    assert sorted(ids.tolist()) == list(range(103))
    assert [len(x) for x, _ in batches] == [7] * 14 + [5]  # full batches across group boundaries
    _, again = all_rows(source, batch_size=7)
    _, other_epoch = all_rows(source, batch_size=7, epoch=1)
    _, other_seed = all_rows(source, batch_size=7, seed=1)
    assert torch.equal(ids, again)
    assert not torch.equal(ids, other_epoch) and not torch.equal(ids, other_seed)
    # groups mix blocks from across the file: the first batch is not one contiguous block
    assert batches[0][0][:, 0].max() - batches[0][0][:, 0].min() > 8


def test_split_is_a_deterministic_partition_of_blocks(tmp_path):
    path, _, _ = row_id_file(tmp_path / "f.h5", n=100)
    source = H5FeatureSource(path, block_rows=10)
    train, val = source.split(0.2, seed=5)
    _, train_ids = all_rows(train, 16)
    _, val_ids = all_rows(val, 16)
    assert len(val) == 20 and len(train) == 80
    assert sorted(train_ids.tolist() + val_ids.tolist()) == list(range(100))
    assert set((val_ids // 10).tolist()).__len__() == 2  # two whole blocks
    assert torch.equal(all_rows(source.split(0.2, seed=5)[1], 16)[1], val_ids)
    with pytest.raises(ValueError, match="empty split"):
        source.split(0.01, seed=0)


def test_iter_ordered_follows_the_file(tmp_path):
    path, feats, labels = row_id_file(tmp_path / "f.h5", n=50, num_labels=4)
    source = H5FeatureSource(path, block_rows=8, memory_budget_mb=16 * 20 / 2 ** 20)
    got_x, got_y = np.empty_like(feats), np.empty_like(labels)
    for offset, x, lab in source.iter_ordered():
        got_x[offset:offset + len(x)], got_y[offset:offset + len(x)] = x, lab
    assert np.array_equal(got_x, feats) and np.array_equal(got_y, labels)


def test_streaming_reader_stays_within_its_memory_budget(tmp_path):
    """A 16 MiB file read completely through a 1 MiB budget: the reader's numpy allocations
    (buffers, batches, labels) never exceed the budget plus two batches and a small overhead."""
    n, d, num_labels, batch = 16384, 256, 16, 32
    rng = np.random.default_rng(0)
    path = write_file(tmp_path / "big.h5", rng.normal(size=(n, d)).astype(np.float32),
                      (rng.random((n, num_labels)) < 0.2).astype(np.int8))
    budget = 2 ** 20
    file_bytes = n * (4 * d + num_labels)
    assert file_bytes > 15 * budget
    source = H5FeatureSource(path, memory_budget_mb=1, block_rows=64)
    assert source.group_rows * (4 * d + num_labels) <= budget
    rows = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for x, y in source.iter_batches(batch, epoch=0, seed=0):
            rows += len(x)
            del x, y
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    batch_bytes = batch * (4 * d + 4 * num_labels + num_labels)
    assert rows == n
    assert peak <= budget + 2 * batch_bytes + 128 * 1024, f"peak {peak / 2 ** 20:.3f} MiB"
    assert peak >= budget / 2  # the measurement sees the group buffers (guards a vacuous pass)


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        H5FeatureSource(str(tmp_path / "missing.h5"))
    path = write_file(tmp_path / "nolabels.h5", np.zeros((3, 2)), np.zeros((3, 2), np.int8))
    with pytest.raises(KeyError, match="'targets'"):
        open_feature_file(path, labels_key="targets")
    path = write_file(tmp_path / "rows.h5", np.zeros((3, 2)), np.zeros((4, 2), np.int8))
    with pytest.raises(ValueError, match="3 rows"):
        H5FeatureSource(path)
    path = write_file(tmp_path / "cols.h5", np.zeros((3, 2)), np.zeros((3, 2), np.int8))
    with pytest.raises(ValueError, match="2 columns but 3 classes"):
        H5FeatureSource(path, num_classes=5, column_classes=[0, 1, 2])
    feats = np.zeros((60, 2))
    feats[37, 1] = np.nan
    path = write_file(tmp_path / "nan.h5", feats, np.ones((60, 1), np.int8))
    with pytest.raises(ValueError, match="row 37 contains NaN"):  # file row, across shuffled blocks
        list(H5FeatureSource(path, block_rows=8).iter_batches(2, 0, 0))
    labels = np.ones((6, 2), np.int8)
    labels[3, 0] = 2
    path = write_file(tmp_path / "lab.h5", np.zeros((6, 2)), labels)
    with pytest.raises(ValueError, match=r"row 3 has values \[2\]"):
        list(H5FeatureSource(path).iter_batches(2, 0, 0))
    path = write_file(tmp_path / "flt.h5", np.zeros((3, 2)), np.array([[1, 0], [0.5, 1], [0, 0]], np.float32))
    with pytest.raises(ValueError, match=r"row 1 has values \[0.5\]"):
        list(H5FeatureSource(path).iter_batches(2, 0, 0))


def test_concat_source_mixes_parts_in_every_batch(tmp_path):
    path, _, _ = row_id_file(tmp_path / "real.h5", n=60, num_labels=3)
    real = H5FeatureSource(path, block_rows=16)
    synth = TensorFeatureSource(torch.cat([1000 + torch.arange(30.)[:, None], torch.zeros(30, 3)], 1),
                                torch.ones(30, 3))
    both = ConcatSource([real, synth])
    assert len(both) == 90 and both.num_classes == 3 and both.feature_dim == 4
    batches = list(both.iter_batches(30, 0, 0))
    ids = torch.cat([x[:, 0] for x, _ in batches]).long().tolist()
    assert sorted(ids) == list(range(60)) + list(range(1000, 1030))
    assert all(((x[:, 0] >= 1000).sum() == 10) for x, _ in batches)  # 1/3 synthetic each
    with pytest.raises(ValueError, match="differ"):
        ConcatSource([real, TensorFeatureSource(torch.zeros(2, 4), torch.ones(2, 5))])
