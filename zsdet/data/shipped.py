"""Data files shipped in the repository's ``datasets/`` folder, addressed as ``zsdet://<path>``.

The repository carries the small public files the benchmarks need (provenance in each folder's
README): ``datasets/coco_zsd/`` (COCO ZSD class splits, the 80-class embedding tables, the 65/15
test-image ids) and ``datasets/nus_wide/`` (the official NUS-WIDE label embeddings). A path
``zsdet://coco_zsd/class_embeddings/fasttext_suzod.tsv`` in a config or on a command line means
``<repository>/datasets/coco_zsd/class_embeddings/fasttext_suzod.tsv`` whatever the working
directory and ``$DETECTRON2_DATASETS`` are. The repository is found from this package's location,
so zsdet must be installed from a checkout (``pip install -e .``, what ``dev/env.sh`` does).
"""
import os
from pathlib import Path
from typing import Union

SCHEME = "zsdet://"
SHIPPED_DATA_DIR = Path(__file__).resolve().parents[2] / "datasets"


def is_shipped(path: Union[str, os.PathLike]) -> bool:
    """Whether ``path`` names a shipped file (``zsdet://...``)."""
    return isinstance(path, str) and path.startswith(SCHEME)


def resolve_data_path(path: Union[str, os.PathLike]) -> str:
    """``zsdet://<rel>`` -> the absolute path of ``datasets/<rel>`` in the repository (which must
    exist); any other path is returned unchanged (as a string)."""
    if not is_shipped(path):
        return os.fspath(path)
    full = SHIPPED_DATA_DIR / path[len(SCHEME):]
    if not full.exists():
        raise FileNotFoundError(
            f"{path}: {full} does not exist (zsdet:// names files shipped in the repository's "
            f"datasets/ folder; install zsdet from a checkout with `pip install -e .`)")
    return str(full)
