"""Fixtures of the tools tests: tools/train_mlzsl.py and tools/extract_vgg_features.py loaded as modules."""
import pytest


@pytest.fixture(scope="module")
def train_mlzsl(load_script):
    """``tools/train_mlzsl.py``."""
    return load_script("tools/train_mlzsl.py")


@pytest.fixture(scope="module")
def extract_vgg_features(load_script):
    """``tools/extract_vgg_features.py``."""
    return load_script("tools/extract_vgg_features.py")
