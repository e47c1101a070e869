"""Work done by the main process alone, its outcome shared with every rank (detectron2's ``launch``).

Under ``launch`` every rank runs the same code, and a branch that some ranks take and others do not
around a collective call (a barrier, DDP's all-reduce) hangs the run until the process group's
timeout. Wherever the branch depends on what a rank sees (a file, a validation score computed
with non-deterministic kernels) or on work only rank 0 does, :func:`run_on_main` makes rank 0's
outcome everybody's: rank 0 runs the function, and every rank returns its value or raises its
exception, so an error on rank 0 stops every rank with the same message instead of leaving them
at a barrier.

The outcome travels through ``torch.distributed.broadcast_object_list`` on a gloo group of the
given timeout (created once per timeout, by every rank at the same call), so a rank may wait
longer than the default group's 30 minutes where rank 0 works long (``LONG_WAIT``).
"""
import pickle
from datetime import timedelta
from typing import Any, Callable, Dict, Optional

import torch.distributed as dist
from detectron2.utils import comm

__all__ = ["run_on_main", "from_main", "DEFAULT_WAIT", "LONG_WAIT"]

DEFAULT_WAIT = timedelta(minutes=30)  # detectron2's launch timeout
LONG_WAIT = timedelta(hours=4)  # a stage that rank 0 runs alone (box classifiers at COCO scale: minutes)

_groups: Dict[timedelta, Any] = {}


def _group(timeout: timedelta):
    """The gloo group of ``timeout`` (created on first use: a collective call of every rank)."""
    if timeout not in _groups:
        _groups[timeout] = dist.new_group(backend="gloo", timeout=timeout)
    return _groups[timeout]


def _picklable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling (it travels to the other ranks), else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001  (any pickling failure: send the text instead)
        return RuntimeError(f"{type(error).__name__}: {error}")


def run_on_main(fn: Callable[[], Any], timeout: Optional[timedelta] = None) -> Any:
    """``fn()`` run by the main process only; its value on every rank, or its exception raised on
    every rank. Other ranks wait up to ``timeout`` (default ``DEFAULT_WAIT``). One process: ``fn()``."""
    if comm.get_world_size() == 1:
        return fn()
    outcome = [None]
    if comm.is_main_process():
        try:
            outcome[0] = (True, fn())
        except Exception as e:  # noqa: BLE001  (every rank raises it below)
            outcome[0] = (False, _picklable(e))
            dist.broadcast_object_list(outcome, src=0, group=_group(timeout or DEFAULT_WAIT))
            raise
    dist.broadcast_object_list(outcome, src=0, group=_group(timeout or DEFAULT_WAIT))
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def from_main(value: Any) -> Any:
    """The main process's ``value`` on every rank (e.g. a decision taken from a file or a score)."""
    return run_on_main(lambda: value)
