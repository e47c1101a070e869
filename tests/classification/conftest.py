"""Fixtures of the classification tests: the two tools under ``tools/`` loaded as modules."""
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_mlzsl():
    """``tools/train_mlzsl.py``."""
    return _load_tool("train_mlzsl")


@pytest.fixture(scope="module")
def extract_vgg_features():
    """``tools/extract_vgg_features.py``."""
    return _load_tool("extract_vgg_features")
