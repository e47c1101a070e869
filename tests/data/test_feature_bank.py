"""RoI feature bank: atomic part files, resume after a kill, reading rows back, clear errors."""
import json
import os

import h5py
import numpy as np
import pytest
import torch

from zsdet.data.feature_bank import (COMPLETE, FeatureBank, FeatureBankWriter, bank_is_complete, done_image_ids,
                                     list_parts, part_bytes)


def outputs(image_ids, d=4, rows=3, labels=None):
    return [{"features": torch.full((rows, d), float(i)),
             "labels": torch.arange(rows) if labels is None else torch.as_tensor(labels), "image_id": i}
            for i in image_ids]


def test_write_read_and_resume(tmp_path):
    writer = FeatureBankWriter(str(tmp_path), 4, ["a", "b", "c"], flush_every=2)
    writer.reset()
    writer.process(None, outputs([1, 2]))  # committed (flush_every reached)
    writer.process(None, outputs([3]))  # buffered only: lost in a "kill"
    assert done_image_ids(str(tmp_path)) == {1, 2}

    writer = FeatureBankWriter(str(tmp_path), 4, ["a", "b", "c"], flush_every=2)
    writer.reset()
    writer.process(None, outputs([3, 4, 5]))
    writer.evaluate()
    assert done_image_ids(str(tmp_path)) == {1, 2, 3, 4, 5}
    assert [os.path.basename(p) for p in list_parts(str(tmp_path))] == [
        "part_rank0_000000.h5", "part_rank0_000001.h5"]

    bank = FeatureBank(str(tmp_path))
    assert len(bank) == 15 and bank.feature_dim == 4 and bank.class_names == ["a", "b", "c"]
    assert bank.image_ids.tolist() == [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3 + [5] * 3
    rows = np.array([14, 0, 7])
    np.testing.assert_array_equal(bank.load(rows)[:, 0], [5.0, 1.0, 3.0])


def test_parts_store_foreground_first_and_load_reads_in_small_blocks(tmp_path):
    writer = FeatureBankWriter(str(tmp_path), 2, ["a", "b"], flush_every=100)
    writer.reset()
    labels = np.array([2, 0, 2, 1, 2, 2, 0, 2, 1, 2])  # 2 = background
    out = [{"features": torch.arange(20.0).reshape(10, 2), "labels": torch.as_tensor(labels), "image_id": 7}]
    writer.process(None, out)
    writer.evaluate()
    bank = FeatureBank(str(tmp_path))
    assert bank.labels.tolist() == [0, 1, 0, 1, 2, 2, 2, 2, 2, 2]
    np.testing.assert_array_equal(bank.load(np.arange(4))[:, 0], [2.0, 6.0, 12.0, 16.0])
    bounds = bank.blocks(np.array([0, 1, 2, 3, 9]), block_rows=2)  # blocks of <= 2 rows in a window of 8
    assert bounds.tolist() == [0, 2, 4, 5]
    np.testing.assert_array_equal(bank.load(np.array([9, 0, 4]), block_rows=1)[:, 0], [18.0, 2.0, 0.0])
    np.testing.assert_array_equal(bank.load(np.array([9, 0]), block_rows=4)[:, 0], [18.0, 2.0])  # sparse read


def test_leftover_tmp_from_a_kill_is_ignored_and_removed(tmp_path):
    (tmp_path / "part_rank0_000000.h5.tmp").write_bytes(b"half a part")
    writer = FeatureBankWriter(str(tmp_path), 4, ["a"], flush_every=1)
    writer.reset()
    assert not (tmp_path / "part_rank0_000000.h5.tmp").exists()
    writer.process(None, outputs([1], rows=1, labels=[0]))
    assert len(FeatureBank(str(tmp_path))) == 1


def test_nan_features_rejected(tmp_path):
    writer = FeatureBankWriter(str(tmp_path), 2, ["a"], flush_every=1)
    writer.reset()
    bad = [{"features": torch.tensor([[float("nan"), 0.0]]), "labels": torch.tensor([0]), "image_id": 1}]
    with pytest.raises(FloatingPointError, match="non-finite RoI features .*part_rank0_000000.h5"):
        writer.process(None, bad)


def test_missing_and_empty_banks_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no RoI feature bank parts"):
        FeatureBank(str(tmp_path / "nope"))
    writer = FeatureBankWriter(str(tmp_path), 4, ["a"], flush_every=1)
    writer.reset()
    writer.process(None, [{"features": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                           "image_id": 3}])
    assert done_image_ids(str(tmp_path)) == {3}
    with pytest.raises(ValueError, match=f"RoI bank {tmp_path} is empty"):
        FeatureBank(str(tmp_path))


def test_feature_dim_mismatch_names_the_part(tmp_path):
    w = FeatureBankWriter(str(tmp_path), 4, ["a"], flush_every=1)
    w.reset()
    w.process(None, outputs([1], rows=1, labels=[0]))
    with pytest.raises(ValueError, match="part_rank0_000000.h5: feature dim 4 != model's 8"):
        FeatureBankWriter(str(tmp_path), 8, ["a"]).reset()
    # a part of another detector copied into the bank
    other = part_bytes(np.zeros((2, 8)), [0, 1], [9, 9], [9], ["a"])
    (tmp_path / "part_rank1_000000.h5").write_bytes(other)
    with pytest.raises(ValueError, match=r"part_rank1_000000.h5 has feature dim 8 but .*part_rank0_000000.h5 has 4"):
        FeatureBank(str(tmp_path))


def test_truncated_part_is_named_and_rebuilt(tmp_path, caplog):
    w = FeatureBankWriter(str(tmp_path), 4, ["a"], flush_every=1)
    w.reset()
    w.process(None, outputs([1], rows=2, labels=[0, 1]))
    w.process(None, outputs([2], rows=2, labels=[0, 1]))
    damaged = tmp_path / "part_rank0_000001.h5"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    with pytest.raises(ValueError, match="part_rank0_000001.h5 is unreadable"):
        FeatureBank(str(tmp_path))
    (tmp_path / COMPLETE).touch()  # damaged after the stage finished
    assert not bank_is_complete(str(tmp_path))  # the features stage runs again ...
    assert "part_rank0_000001.h5 is unreadable" in caplog.text
    assert (tmp_path / "part_rank0_000001.h5.corrupt").exists() and not (tmp_path / COMPLETE).exists()
    assert done_image_ids(str(tmp_path)) == {1}  # ... and redoes image 2
    w = FeatureBankWriter(str(tmp_path), 4, ["a"], flush_every=1)
    w.reset()
    w.process(None, outputs([2], rows=2, labels=[0, 1]))
    assert FeatureBank(str(tmp_path)).image_ids.tolist() == [1, 1, 2, 2]


def test_old_single_file_layout_is_refused(tmp_path):
    with h5py.File(tmp_path / "shard_rank0.h5", "w") as f:
        f.attrs["class_names"] = json.dumps(["a"])
    with pytest.raises(ValueError, match="shard_rank0.h5 is a RoI bank shard of an older zsdet layout"):
        FeatureBank(str(tmp_path))


def test_missing_seen_class_is_named(tmp_path):
    w = FeatureBankWriter(str(tmp_path), 4, ["cat", "dog", "cow"], flush_every=1)
    w.reset()
    w.process(None, outputs([1], rows=3, labels=[0, 2, 3]))
    bank = FeatureBank(str(tmp_path))
    with pytest.raises(ValueError, match=r"no foreground row of seen class\(es\) \['dog'\]"):
        bank.check_classes([0, 1], bank.foreground_rows(), "foreground")
