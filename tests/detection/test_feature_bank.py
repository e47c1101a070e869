"""RoI feature bank: incremental HDF5 writes, resume after a kill, reading rows back."""
import h5py
import numpy as np
import pytest
import torch

from zsdet.data.feature_bank import FeatureBank, FeatureBankWriter, done_image_ids, shard_path


def outputs(image_ids, d=4, rows=3):
    return [{"features": torch.full((rows, d), float(i)), "labels": torch.arange(rows),
             "image_id": i} for i in image_ids]


def test_write_read_and_resume(tmp_path):
    writer = FeatureBankWriter(str(tmp_path), 4, ["a", "b", "c"], flush_every=2)
    writer.reset()
    writer.process(None, outputs([1, 2]))  # committed (flush_every reached)
    writer.process(None, outputs([3]))  # buffered only: lost in a "kill"
    writer._file.close()  # simulate a kill: no evaluate()
    assert done_image_ids(str(tmp_path)) == {1, 2}

    writer = FeatureBankWriter(str(tmp_path), 4, ["a", "b", "c"], flush_every=2)
    writer.reset()
    writer.process(None, outputs([3, 4, 5]))
    writer.evaluate()
    assert done_image_ids(str(tmp_path)) == {1, 2, 3, 4, 5}

    bank = FeatureBank(str(tmp_path))
    assert len(bank) == 15 and bank.feature_dim == 4 and bank.class_names == ["a", "b", "c"]
    assert bank.image_ids.tolist() == [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3 + [5] * 3
    rows = np.array([14, 0, 7])
    np.testing.assert_array_equal(bank.load(rows)[:, 0], [5.0, 1.0, 3.0])


def test_uncommitted_rows_are_truncated(tmp_path):
    writer = FeatureBankWriter(str(tmp_path), 4, ["a"], flush_every=1)
    writer.reset()
    writer.process(None, outputs([1], rows=1))
    writer.evaluate()
    with h5py.File(shard_path(str(tmp_path), 0), "a") as f:  # rows written after the last commit
        f["features"].resize(5, axis=0)
        f["labels"].resize(5, axis=0)
    assert len(FeatureBank(str(tmp_path))) == 1
    writer.reset()
    with h5py.File(shard_path(str(tmp_path), 0), "r") as f:
        assert f["features"].shape[0] == 1


def test_nan_features_rejected(tmp_path):
    writer = FeatureBankWriter(str(tmp_path), 2, ["a"], flush_every=1)
    writer.reset()
    bad = [{"features": torch.tensor([[float("nan"), 0.0]]), "labels": torch.tensor([0]), "image_id": 1}]
    with pytest.raises(FloatingPointError, match="non-finite RoI features"):
        writer.process(None, bad)


def test_missing_bank_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no RoI feature bank shards"):
        FeatureBank(str(tmp_path / "nope"))


def test_feature_dim_mismatch(tmp_path):
    w = FeatureBankWriter(str(tmp_path), 4, ["a"])
    w.reset()
    w.evaluate()
    with pytest.raises(ValueError, match="feature dim 4 != model's 8"):
        FeatureBankWriter(str(tmp_path), 8, ["a"]).reset()
