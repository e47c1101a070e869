"""Disk full while writing the RoI bank (issue 10, item 8): a clear error naming the part and
"no space left on device", committed rows intact, and a rerun that continues after them."""
import errno
import os

import numpy as np
import pytest
import torch

import zsdet.data.feature_bank as feature_bank
from zsdet.data.feature_bank import FeatureBank, FeatureBankWriter, done_image_ids


def image(i, rows=3, d=4):
    return {"features": torch.full((rows, d), float(i)), "labels": torch.tensor([0, 1, 2][:rows]), "image_id": i}


def test_full_disk_keeps_committed_parts_and_the_rerun_continues(tmp_path, monkeypatch):
    bank_dir = str(tmp_path / "roi_bank")
    real_fsync, calls = os.fsync, []

    def fsync_then_disk_full(fd):
        calls.append(fd)
        if len(calls) == 2:  # the second part hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(feature_bank.os, "fsync", fsync_then_disk_full)
    writer = FeatureBankWriter(bank_dir, 4, ["a", "b", "c"], flush_every=2)
    writer.reset()
    writer.process(None, [image(1), image(2)])
    disk_full = r"no space left on device while writing RoI bank part .*part_rank0_000001\.h5"
    with pytest.raises(OSError, match=disk_full) as err:
        writer.process(None, [image(3), image(4)])
    assert err.value.errno == errno.ENOSPC
    assert sorted(os.listdir(bank_dir)) == ["part_rank0_000000.h5"]  # no half-written part, no .tmp
    assert done_image_ids(bank_dir) == {1, 2}
    assert FeatureBank(bank_dir).image_ids.tolist() == [1, 1, 1, 2, 2, 2]

    monkeypatch.setattr(feature_bank.os, "fsync", real_fsync)  # space freed: rerun the remaining images
    writer = FeatureBankWriter(bank_dir, 4, ["a", "b", "c"], flush_every=2)
    writer.reset()
    writer.process(None, [image(i) for i in (3, 4) if i not in done_image_ids(bank_dir)])
    writer.evaluate()
    bank = FeatureBank(bank_dir)
    assert bank.image_ids.tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    np.testing.assert_array_equal(bank.load(np.arange(len(bank)))[:, 0], np.repeat([1.0, 2.0, 3.0, 4.0], 3))


def test_failed_rename_leaves_nothing_behind(tmp_path, monkeypatch):
    def no_rename(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(feature_bank.os, "replace", no_rename)
    writer = FeatureBankWriter(str(tmp_path), 4, ["a", "b", "c"], flush_every=1)
    writer.reset()
    with pytest.raises(OSError, match=r"Input/output error while writing RoI bank part .*part_rank0_000000\.h5"):
        writer.process(None, [image(1)])
    assert os.listdir(tmp_path) == []
