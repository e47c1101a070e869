"""Shared test fixtures: paths and the repository's scripts."""
import contextlib
import importlib.util
import os
from pathlib import Path

import pytest
import torch

import zsdet  # noqa: F401  (Pillow alias before any detectron2.data import in the tests)
from zsdet.synthesis import SynthesisTrainer

REPO = Path(__file__).resolve().parents[1]

# Two cores: keep torch from oversubscribing when several processes run. Under pytest-xdist (dev/test.sh
# runs two workers) each worker and the processes its tests start take one thread.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def _load_script(relative_path: str):
    """Import a repository script (e.g. ``tools/demo.py``) as a module."""
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(f"zsdet_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: tiny networks and small images run fastest that way on a busy
    2-core machine (no OpenMP barrier stalls)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def load_script():
    """``load_script("tools/demo.py")`` imports a repository script as a module."""
    return _load_script


class KilledRun(Exception):
    """A run killed by a test (:func:`killed_after_checkpoint`)."""


@pytest.fixture
def killed_after_checkpoint(monkeypatch):
    """``with killed_after_checkpoint(epoch): run()``: the generator run inside the block is killed right
    after it writes its checkpoint of ``epoch`` (the block must end in that kill; the patch is undone
    on leaving it)."""
    @contextlib.contextmanager
    def killed(epoch: int = 1):
        save = SynthesisTrainer._save_checkpoint

        def save_then_die(self, at):
            save(self, at)
            if at == epoch:
                raise KilledRun
        with monkeypatch.context() as patch:
            patch.setattr(SynthesisTrainer, "_save_checkpoint", save_then_die)
            with pytest.raises(KilledRun):
                yield
    return killed
