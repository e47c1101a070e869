"""zsdet: generative multi-label zero-shot learning and zero-shot detection on detectron2.

Importing the package applies the detectron2 compatibility shims (import zsdet before
``detectron2.data``) and registers every zsdet component in detectron2's registries and catalogs:
the ZSD ROI heads (``ROI_HEADS_REGISTRY``) and the datasets (``DatasetCatalog``).
"""
from . import compat  # noqa: F401  (must run before any detectron2.data import)
from . import modeling  # noqa: F401  (registers ZSDROIHeads)
from .config import add_zsdet_config, get_zsdet_cfg
from .data import datasets  # noqa: F401  (registers the shapes and COCO ZSD datasets)

__all__ = ["add_zsdet_config", "get_zsdet_cfg"]
