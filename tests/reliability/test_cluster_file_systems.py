"""Cluster file systems (issue 17, item 4): an OUTPUT_DIR lock that cannot be taken (flock unsupported,
as on some NFS / Lustre mounts: ENOLCK, ENOSYS, EOPNOTSUPP) falls back to a lock file, and a busy
folder stops every rank with the message, none left at a barrier; a RoI bank part the system cannot
read for a transient reason (EIO, EACCES, ESTALE) is named and kept, only a damaged one is set aside."""
import errno
import os
import socket
from datetime import timedelta

import h5py
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.utils import comm

import zsdet.data.feature_bank as feature_bank
import zsdet.engine.output_lock as output_lock
from zsdet.data.feature_bank import (COMPLETE, FeatureBankWriter, PartUnavailable, bank_is_complete, done_image_ids,
                                     list_parts)
from zsdet.engine.output_lock import FALLBACK_NAME, OutputDirBusy, exclusive_output_dir

WAIT = timedelta(seconds=20)  # a rank left at a barrier fails the test instead of hanging it


def no_flock(code):
    def flock(f, op):
        raise OSError(code, os.strerror(code))
    return flock


def _lock_worker(rank, world, init_file, out_dir, results):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=WAIT)
    outcome = {}
    try:
        output_lock.fcntl.flock = no_flock(errno.ENOLCK)  # this file system has no flock
        with exclusive_output_dir(out_dir):
            outcome["held"] = os.path.isfile(os.path.join(out_dir, FALLBACK_NAME))
            comm.synchronize()  # every rank has looked before rank 0 releases the lock
        comm.synchronize()
        outcome["released"] = not os.path.exists(os.path.join(out_dir, FALLBACK_NAME))
        comm.synchronize()
        if rank == 0:  # another live run on this host holds the folder
            with open(os.path.join(out_dir, FALLBACK_NAME), "w") as f:
                f.write(f"pid {os.getppid()} on {socket.gethostname()}, since today\n")
        for case in ("fallback busy", "flock busy"):
            if case == "flock busy":
                output_lock.fcntl.flock = no_flock(errno.EWOULDBLOCK)
            try:
                with exclusive_output_dir(out_dir):
                    comm.synchronize()
            except OutputDirBusy as e:
                outcome[case] = str(e)
    finally:
        torch.save(outcome, f"{results}/rank{rank}.pt")
        dist.destroy_process_group()


def test_without_flock_a_lock_file_is_used_and_every_rank_hears_busy(tmp_path):
    out = tmp_path / "out"
    mp.spawn(_lock_worker, args=(2, str(tmp_path / "init"), str(out), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        outcome = torch.load(tmp_path / f"rank{rank}.pt")
        assert outcome["held"] and outcome["released"], (rank, outcome)
        assert f"in use by another run (pid {os.getpid()} on {socket.gethostname()}" in outcome["fallback busy"]
        assert str(out / FALLBACK_NAME) in outcome["fallback busy"]
        assert f"OUTPUT_DIR {out} is in use by another run" in outcome["flock busy"]


def test_stale_lock_file_of_a_dead_run_on_this_host_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr(output_lock.fcntl, "flock", no_flock(errno.ENOSYS))
    tmp_path.joinpath(FALLBACK_NAME).write_text(f"pid 999999999 on {socket.gethostname()}, since yesterday\n")
    with exclusive_output_dir(str(tmp_path)):
        assert f"pid {os.getpid()} " in tmp_path.joinpath(FALLBACK_NAME).read_text()
    assert not tmp_path.joinpath(FALLBACK_NAME).exists()
    tmp_path.joinpath(FALLBACK_NAME).write_text("pid 1 on another-host, since yesterday\n")  # cannot be checked
    with pytest.raises(OutputDirBusy, match=f"delete {tmp_path / FALLBACK_NAME}"):
        with exclusive_output_dir(str(tmp_path)):
            pass


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"),
                                   PermissionError(errno.EACCES, "Permission denied"),
                                   OSError("Unable to synchronously open file (file read failed: errno = 116, "
                                           "error message = 'Stale file handle')")])
def test_part_the_system_cannot_read_is_named_and_kept(tmp_path, monkeypatch, error):
    writer = FeatureBankWriter(str(tmp_path), 4, ["a"], flush_every=1)
    writer.reset()
    for image in (1, 2):
        writer.process(None, [{"features": torch.ones(2, 4), "labels": torch.tensor([0, 1]), "image_id": image}])
    (tmp_path / COMPLETE).touch()
    parts = list_parts(str(tmp_path))
    real_open = h5py.File

    def flaky(path, *args, **kwargs):
        if str(path) == parts[1]:
            raise error
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(feature_bank.h5py, "File", flaky)
    for check in (bank_is_complete, done_image_ids):
        with pytest.raises(PartUnavailable, match=f"RoI bank part {parts[1]} could not be read") as raised:
            check(str(tmp_path))
        assert raised.value.errno in (errno.EIO, errno.EACCES, errno.ESTALE)
    assert list_parts(str(tmp_path)) == parts and (tmp_path / COMPLETE).exists()  # nothing set aside or undone
