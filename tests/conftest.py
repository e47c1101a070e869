"""Shared test fixtures: paths, the optional ../shared data, and small detectron2 configs."""
import os
from pathlib import Path

import pytest
import torch

import zsdet  # noqa: F401  (Pillow alias before any detectron2.data import in the tests)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Two cores: keep torch from oversubscribing when several processes run.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; the test is skipped when it is absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is not present")
    return path
