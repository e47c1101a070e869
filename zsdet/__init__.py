"""zsdet: generative multi-label zero-shot learning and zero-shot detection on detectron2.

Importing the package applies the detectron2 compatibility shims and registers every zsdet
component in detectron2's registries and catalogs.
"""
from . import compat  # noqa: F401  (must run before any detectron2 import)
from .config import add_zsdet_config

__all__ = ["add_zsdet_config"]
