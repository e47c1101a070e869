"""One run at a time per ``OUTPUT_DIR``: an exclusive ``flock`` on ``OUTPUT_DIR/.zsdet.lock``.

The kernel releases the lock when the holder exits or is killed, so a stale lock file never
blocks a rerun. Under ``launch`` only the main process (global rank 0) takes it: all ranks of one
run share the folder.
"""
import contextlib
import fcntl
import os
import socket
import time

from detectron2.utils import comm

LOCK_NAME = ".zsdet.lock"


class OutputDirBusy(RuntimeError):
    """Another live run holds the ``OUTPUT_DIR`` lock."""


@contextlib.contextmanager
def exclusive_output_dir(output_dir: str):
    """Hold the lock on ``output_dir`` (created if missing) for the block; raise
    :class:`OutputDirBusy` naming the folder and the holder when another run has it."""
    if not comm.is_main_process():
        yield
        return
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_NAME)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown process"
            raise OutputDirBusy(f"OUTPUT_DIR {output_dir} is in use by another run ({holder}); wait for it "
                                "to finish or choose another OUTPUT_DIR") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
