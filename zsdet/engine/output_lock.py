"""One run at a time per ``OUTPUT_DIR``: an exclusive ``flock`` on ``OUTPUT_DIR/.zsdet.lock``, or a
lock file where the file system has no ``flock``.

``flock``: the kernel releases the lock when the holder exits or is killed, so a stale lock file
never blocks a rerun. Some cluster file systems refuse ``flock`` (``ENOLCK``: NFS without a lock
daemon; ``ENOSYS`` / ``EOPNOTSUPP``: some Lustre and FUSE mounts). There the lock is the file
``OUTPUT_DIR/.zsdet.owner``, created exclusively (``O_EXCL``) with the holder's pid and host and
removed when the run ends. A run killed without clean-up leaves it behind: a later run on the same
host takes it over when that pid is gone; on another host it cannot tell, and its message names the
file to delete.

Under ``launch`` only the main process (global rank 0) takes the lock (all ranks of one run share
the folder), and its outcome reaches every rank (:func:`~zsdet.utils.ranks.run_on_main`): a busy
folder stops every rank with the same message, none is left waiting at a barrier.
"""
import contextlib
import errno
import fcntl
import logging
import os
import re
import socket
import time
from typing import Callable

from ..utils.ranks import run_on_main

__all__ = ["LOCK_NAME", "FALLBACK_NAME", "OutputDirBusy", "exclusive_output_dir"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".zsdet.lock"
FALLBACK_NAME = ".zsdet.owner"
NO_FLOCK = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


class OutputDirBusy(RuntimeError):
    """Another live run holds the ``OUTPUT_DIR`` lock."""


@contextlib.contextmanager
def exclusive_output_dir(output_dir: str):
    """Hold the lock on ``output_dir`` (created if missing) for the block; raise
    :class:`OutputDirBusy` on every rank, naming the folder and the holder, when another run has it."""
    releases = []
    run_on_main(lambda: releases.append(_acquire(output_dir)))
    try:
        yield
    finally:
        for release in releases:
            release()


def _holder() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"


def _busy(output_dir: str, holder: str) -> OutputDirBusy:
    return OutputDirBusy(f"OUTPUT_DIR {output_dir} is in use by another run ({holder}); wait for it to finish "
                         "or choose another OUTPUT_DIR")


def _acquire(output_dir: str) -> Callable[[], None]:
    """Take the lock of ``output_dir``; returns the function that releases it."""
    os.makedirs(output_dir, exist_ok=True)
    f = open(os.path.join(output_dir, LOCK_NAME), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown process"
        f.close()
        raise _busy(output_dir, holder) from None
    except OSError as e:
        f.close()
        if e.errno not in NO_FLOCK:
            raise
        logger.warning("the file system of OUTPUT_DIR %s has no flock (%s): locking it with the file %s instead; "
                       "a run killed on another machine leaves that file behind (delete it then)", output_dir,
                       e.strerror or e, os.path.join(output_dir, FALLBACK_NAME))
        return _take_lock_file(output_dir)
    f.seek(0)
    f.truncate()
    f.write(_holder() + "\n")
    f.flush()

    def release():
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
    return release


def _gone_from_this_host(holder: str) -> bool:
    """Whether the lock file's ``holder`` ("pid P on HOST, ...") is a process of this host that has ended."""
    found = re.match(r"pid (\d+) on (\S+),", holder)
    if not found or found.group(2) != socket.gethostname():
        return False
    try:
        os.kill(int(found.group(1)), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def _take_lock_file(output_dir: str) -> Callable[[], None]:
    """The fallback lock: create ``FALLBACK_NAME`` exclusively (taking over one of an ended process of
    this host); returns the function that removes it."""
    path = os.path.join(output_dir, FALLBACK_NAME)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with open(path) as f:
                holder = f.read().strip() or "unknown process"
            if not _gone_from_this_host(holder):
                raise _busy(output_dir, f"{holder}; lock file {path}, as the file system has no flock. If no "
                                        f"run uses the folder any more (e.g. one killed on another machine), "
                                        f"delete {path}") from None
            logger.warning("taking over the lock file %s of a run that has ended (%s)", path, holder)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            continue
        text = _holder()
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")

        def release():
            with contextlib.suppress(OSError), open(path) as f:
                if f.read().strip() == text:
                    os.remove(path)
        return release
    raise _busy(output_dir, f"another run took the lock file {path} at the same time")
