"""Seen / unseen split and class embeddings read from dataset metadata."""
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from zsdet.data.zsd_split import ZeroShotSplit, class_embeddings_of

NAME = "zsdet_test_split_meta"


@pytest.fixture(scope="module", autouse=True)
def dataset():
    if NAME not in DatasetCatalog.list():
        DatasetCatalog.register(NAME, lambda: [])
        MetadataCatalog.get(NAME).set(thing_classes=["a", "b", "c"], unseen_classes=["c", "a"],
                                      class_embeddings=[[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])


def test_split_ids():
    split = ZeroShotSplit.from_dataset(NAME)
    assert split.seen_ids == (1,) and split.unseen_ids == (0, 2) and split.num_classes == 3


def test_unknown_unseen_class_is_named():
    with pytest.raises(KeyError, match=r"\['zebra'\]"):
        ZeroShotSplit.from_names(["a", "b"], ["zebra"])


def test_embeddings_normalisations():
    l2 = class_embeddings_of(NAME)
    np.testing.assert_allclose(np.linalg.norm(l2, axis=1), 1.0, rtol=1e-6)
    spectral = class_embeddings_of(NAME, normalize="spectral")
    raw = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    np.testing.assert_allclose(spectral, raw / np.linalg.norm(raw, ord=2), rtol=1e-6)


def test_file_overrides_metadata(tmp_path):
    table = tmp_path / "emb.tsv"
    table.write_text("a\t1\t0\t0\nb\t0\t1\t0\nc\t0\t0\t2\n")
    emb = class_embeddings_of(NAME, path=str(table), normalize="none")
    np.testing.assert_array_equal(emb, [[1, 0, 0], [0, 1, 0], [0, 0, 2]])
    table.write_text("a\t1\t0\t0\nb\t0\t1\t0\n")
    with pytest.raises(KeyError, match="c"):
        class_embeddings_of(NAME, path=str(table))
