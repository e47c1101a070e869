"""A class name listed twice is an error naming the file (or dataset) and the class, wherever class
names are read (issue 10, item 5): class-list files, .npy row names, embedding tables, the
classes looked up, dataset metadata, class-split files and the classification tool's seen / unseen
lists."""
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from zsdet.config import get_zsdet_cfg
from zsdet.data.datasets.coco_zsd import load_class_split
from zsdet.data.embeddings import load_class_embeddings, read_class_list, write_embedding_table
from zsdet.data.mlzsl import SyntheticBenchmarkSpec, load_benchmark, write_synthetic_benchmark
from zsdet.data.zsd_split import ZeroShotSplit

DUPLICATED = ["cat", "dog", "cat", "bird"]


def write_lines(path, names):
    path.write_text("".join(f"{n}\n" for n in names))
    return path


def test_class_list_file(tmp_path):
    path = write_lines(tmp_path / "classes.txt", DUPLICATED)
    with pytest.raises(ValueError, match=rf"{path}.*more than once.*'cat'"):
        read_class_list(path)


def test_npy_row_names(tmp_path):
    np.save(tmp_path / "emb.npy", np.eye(4, dtype=np.float32))
    write_lines(tmp_path / "emb.txt", DUPLICATED)
    with pytest.raises(ValueError, match=r"emb\.txt.*more than once.*'cat'"):
        load_class_embeddings(tmp_path / "emb.npy", ["dog", "bird"])
    with pytest.raises(ValueError, match=r"emb\.npy.*more than once.*'cat'"):  # names given as a list
        load_class_embeddings(tmp_path / "emb.npy", ["dog", "bird"], class_list=DUPLICATED)


def test_embedding_table_and_looked_up_classes(tmp_path):
    table = tmp_path / "emb.tsv"
    write_embedding_table(table, ["cat", "dog", "bird"], np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match=r"classes looked up in .*emb\.tsv.*more than once.*'cat'"):
        load_class_embeddings(table, DUPLICATED)
    table.write_text(table.read_text() + "cat\t0\t0\t1\n")
    with pytest.raises(ValueError, match=r"emb\.tsv.*more than once.*'cat'"):
        load_class_embeddings(table, ["dog"])


def test_dataset_metadata():
    name = "zsdet_test_duplicate_classes"
    DatasetCatalog.register(name, lambda: [])
    try:
        MetadataCatalog.get(name).set(thing_classes=DUPLICATED, unseen_classes=["bird"])
        with pytest.raises(ValueError, match=rf"{name}.*thing_classes.*more than once.*'cat'"):
            ZeroShotSplit.from_dataset(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    with pytest.raises(ValueError, match=r"unseen_classes.*more than once.*'bird'"):
        ZeroShotSplit.from_names(["cat", "dog", "bird"], ["bird", "bird"])


def test_classification_seen_classes_file(tmp_path):
    """The reported case: one seen class listed twice gave 49 per-label APs for 50 classes."""
    paths = write_synthetic_benchmark(str(tmp_path / "data"), SyntheticBenchmarkSpec(
        num_seen=4, num_unseen=2, feature_dim=8, embedding_dim=4, num_train=40, num_zsl_test=10,
        num_gzsl_test=10, num_topics=2))
    seen = write_lines(tmp_path / "seen.txt", ["seen000", "seen001", "seen002", "seen001"])
    cfg = get_zsdet_cfg(opts=[
        "MLZSL.BENCHMARK", "custom", "MLZSL.TRAIN_FILE", paths["train"], "MLZSL.ZSL_TEST_FILE", paths["zsl_test"],
        "MLZSL.GZSL_TEST_FILE", paths["gzsl_test"], "MLZSL.SEEN_CLASSES_FILE", str(seen),
        "MLZSL.UNSEEN_CLASSES_FILE", paths["unseen_classes"], "MLZSL.EMBEDDINGS_FILE", paths["embeddings"]])
    with pytest.raises(ValueError, match=rf"{seen}.*more than once.*'seen001'"):
        load_benchmark(cfg)


def test_class_split_files(tmp_path):
    tsv = tmp_path / "split.tsv"
    tsv.write_text("name\tsplit\ncat\tseen\ndog\tunseen\ncat\tnone\n")
    with pytest.raises(ValueError, match=rf"{tsv}.*more than once.*'cat'"):
        load_class_split(tsv, ["cat", "dog"])
    js = tmp_path / "split.json"
    js.write_text('{"seen": ["cat"], "unseen": ["dog", "dog"]}')
    with pytest.raises(ValueError, match=rf"{js}.*unseen.*more than once.*'dog'"):
        load_class_split(js, ["cat", "dog"])
