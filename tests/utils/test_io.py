"""zsdet.utils.io: whole files or none, one error message naming the file, json read and written."""
import errno
import json
import os

import numpy as np
import pytest
import torch

from zsdet.utils import io


def test_writers_leave_only_the_file(tmp_path):
    io.write_json(str(tmp_path / "sub" / "a.json"), {"x": [1, 2.5], "nan": float("nan")})
    io.write_text(str(tmp_path / "b.txt"), "ü\n")
    io.write_torch(str(tmp_path / "c.pth"), {"t": torch.arange(3)})
    with io.atomic_file(str(tmp_path / "d.npy")) as f:
        np.save(f, np.eye(2))
    assert sorted(os.listdir(tmp_path)) == ["b.txt", "c.pth", "d.npy", "sub"]
    assert os.listdir(tmp_path / "sub") == ["a.json"]
    assert io.read_json(str(tmp_path / "sub" / "a.json"), "test") == {"x": [1, 2.5], "nan": None}
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "ü\n"
    assert torch.equal(torch.load(tmp_path / "c.pth")["t"], torch.arange(3))
    assert np.array_equal(np.load(tmp_path / "d.npy"), np.eye(2))


def test_json_layout_and_infinities(tmp_path):
    io.write_json(str(tmp_path / "one_line.json"), {"a": [1, 2]}, indent=None)
    assert (tmp_path / "one_line.json").read_text() == json.dumps({"a": [1, 2]})
    with pytest.raises(ValueError):
        io.write_json(str(tmp_path / "inf.json"), {"a": float("inf")})
    assert os.listdir(tmp_path) == ["one_line.json"]


def test_a_failed_write_keeps_the_previous_file_and_names_the_path(tmp_path, monkeypatch):
    path = str(tmp_path / "model.pth")
    io.write_bytes(path, b"previous")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match=f"no space left on device while writing a checkpoint {path}; ") as e:
        io.write_bytes(path, b"new", what="a checkpoint")
    assert e.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == ["model.pth"] and open(path, "rb").read() == b"previous"


def test_other_errors_pass_unchanged_and_leave_nothing(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with io.atomic_file(str(tmp_path / "x.bin")) as f:
            f.write(b"part")
            1 / 0
    assert os.listdir(tmp_path) == []


def test_read_json_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"class-split file {tmp_path / 'no.json'} does not exist"):
        io.read_json(str(tmp_path / "no.json"), "class-split")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"results file .*bad.json is not valid JSON"):
        io.read_json(str(tmp_path / "bad.json"), "results")


def test_set_aside(tmp_path):
    (tmp_path / "part.h5").write_bytes(b"damaged")
    assert io.set_aside(str(tmp_path / "part.h5"), ".corrupt") == str(tmp_path / "part.h5.corrupt")
    assert os.listdir(tmp_path) == ["part.h5.corrupt"]
