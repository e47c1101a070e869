"""Files written whole, and json files read with errors that name them.

Every artifact (checkpoint, RoI bank part, json, table, figure) is written by :func:`atomic_file`:
to ``<path>.tmp`` in the same folder, flushed and fsynced, then renamed onto ``<path>`` with
``os.replace``. A reader sees the previous file or the new one, never a part of one; the folder is
not fsynced, so a power loss can at worst undo the rename (the previous file stays).

Any ``OSError`` while writing (a full disk, a failing rename) removes the temporary file and is
raised again with the same errno as ``OSError("<reason> while writing <what> <path>; <hint>")``,
``<reason>`` being "no space left on device" for ``ENOSPC``. Other errors (e.g. an object that
cannot be pickled) remove the temporary file and propagate unchanged.
"""
import errno
import json
import math
import os
from contextlib import contextmanager, suppress
from typing import Any, Iterator, Optional

import torch

__all__ = ["atomic_file", "write_bytes", "write_text", "write_json", "write_torch", "write_figure",
           "read_json", "set_aside"]

KEEP_PREVIOUS = "the previous file, if any, is intact: fix the cause (e.g. free space) and rerun"


def _os_error(error: Optional[BaseException]) -> Optional[OSError]:
    """``error`` or the first exception it was raised from that is an ``OSError`` (torch wraps
    write errors in a ``RuntimeError``)."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


@contextmanager
def atomic_file(path: str, what: str = "", hint: str = KEEP_PREVIOUS) -> Iterator:
    """A binary file object whose content replaces ``path`` when the block ends without error.

    Args:
        path: the file to write; its folder is created if needed.
        what: what the file is, for the error message (e.g. ``"RoI bank part"``).
        hint: what the error message tells the user to do.
    """
    tmp = path + ".tmp"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with suppress(OSError):
            os.remove(tmp)
        cause = _os_error(e)
        if cause is None:
            raise
        reason = "no space left on device" if cause.errno == errno.ENOSPC else (cause.strerror or str(cause))
        raise OSError(cause.errno, f"{reason} while writing {what + ' ' if what else ''}{path}; {hint}") from e


def write_bytes(path: str, data: bytes, what: str = "", hint: str = KEEP_PREVIOUS) -> None:
    """Write ``data`` to ``path`` atomically (``what`` and ``hint`` as in :func:`atomic_file`)."""
    with atomic_file(path, what, hint) as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically, UTF-8 encoded."""
    write_bytes(path, text.encode("utf-8"))


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


def write_json(path: str, payload: Any, indent: Optional[int] = 2) -> None:
    """Write ``payload`` as JSON atomically; NaN floats are written as ``null``, infinities raise
    ``ValueError``. ``indent=None`` writes one line."""
    try:
        text = json.dumps(payload, indent=indent, allow_nan=False)
    except ValueError:  # NaN somewhere: walk the payload only then
        text = json.dumps(_nan_to_none(payload), indent=indent, allow_nan=False)
    write_text(path, text)


def write_torch(path: str, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    with atomic_file(path) as f:
        torch.save(obj, f)


def write_figure(path: str, fig, **savefig_kwargs) -> None:
    """Save a matplotlib figure to ``path`` atomically, in the format of its extension (png by default)."""
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    with atomic_file(path) as f:
        fig.savefig(f, format=fmt, **savefig_kwargs)


def set_aside(path: str, suffix: str) -> str:
    """Rename a damaged artifact to ``path + suffix`` (replacing an older one); returns the new name."""
    os.replace(path, path + suffix)
    return path + suffix


def read_json(path: str, what: str) -> Any:
    """Parsed json of ``path``.

    Raises:
        FileNotFoundError / ValueError naming ``what`` (e.g. ``"class-split"``) and ``path`` when the
        file is missing or not valid json (truncated, wrong encoding, a syntax error).
    """
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} file {path} is not valid JSON ({e})") from None
