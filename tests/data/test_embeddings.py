"""Class-embedding loaders on tiny files in each format, and on the real files shipped in datasets/."""
import pickle
from pathlib import Path

import numpy as np
import pytest

from zsdet.data.datasets.coco_zsd import COCO_THING_CLASSES, DEFAULT_EMBEDDINGS
from zsdet.data.embeddings import (
    detect_format, load_class_embeddings, load_nus_wide_glove, read_embedding_table,
    write_embedding_table,
)
from zsdet.data.shipped import resolve_data_path

VEC = {  # 3-d vectors of a tiny vocabulary
    "cat": [1.0, 2.0, 2.0], "dog": [0.0, 3.0, 4.0], "hot": [1.0, 0.0, 0.0],
    "dog_phrase": [0.0, 0.0, 5.0],
}


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _table(tmp_path, rows, name="emb.tsv"):
    return _write(tmp_path / name, "".join(
        "\t".join([n, *map(str, v)]) + "\n" for n, v in rows))


# ---------------------------------------------------------------- table


def test_table_rows_follow_class_names_and_skip_extra_rows(tmp_path):
    path = _table(tmp_path, [("__background__", [1, 1, 1]), ("cat", VEC["cat"]),
                             ("dog", VEC["dog"])])
    raw = load_class_embeddings(path, ["dog", "cat"], normalize="none")
    assert raw.dtype == np.float32 and raw.shape == (2, 3)
    np.testing.assert_array_equal(raw, [VEC["dog"], VEC["cat"]])
    l2 = load_class_embeddings(path, ["dog", "cat"])
    np.testing.assert_allclose(l2, [[0, 0.6, 0.8], [1 / 3, 2 / 3, 2 / 3]], rtol=1e-6)


def test_spectral_normalisation_divides_by_largest_singular_value(tmp_path):
    path = _table(tmp_path, [("cat", VEC["cat"]), ("dog", VEC["dog"]), ("hot", VEC["hot"])])
    names = ["cat", "dog", "hot"]
    raw = load_class_embeddings(path, names, normalize="none").astype(np.float64)
    spectral = load_class_embeddings(path, names, normalize="spectral")
    np.testing.assert_allclose(spectral, raw / np.linalg.svd(raw, compute_uv=False)[0], rtol=1e-6)
    assert np.linalg.norm(spectral, ord=2) == pytest.approx(1.0, abs=1e-6)
    assert not np.allclose(np.linalg.norm(spectral, axis=1), 1.0)  # not a per-row scaling


def test_underscore_spelling_matches_a_spaced_class_name(tmp_path):
    path = _table(tmp_path, [("hot_dog", VEC["dog_phrase"]), ("cat", VEC["cat"])])
    out = load_class_embeddings(path, ["hot dog"], normalize="none")
    np.testing.assert_array_equal(out, [VEC["dog_phrase"]])


def test_table_errors_name_the_problem(tmp_path):
    path = _table(tmp_path, [("cat", VEC["cat"]), ("dog", VEC["dog"])])
    with pytest.raises(KeyError, match="hot dog"):
        load_class_embeddings(path, ["cat", "hot dog"])  # tables never average words
    with pytest.raises(ValueError, match=r"dimension 3, expected 300"):
        load_class_embeddings(path, ["cat"], expected_dim=300)
    ragged = _write(tmp_path / "ragged.tsv", "cat\t1\t2\t3\ndog\t1\t2\n")
    with pytest.raises(ValueError, match=r"ragged.tsv:2: 'dog' has 2 values"):
        load_class_embeddings(ragged, ["cat"])
    nan = _table(tmp_path, [("cat", [1.0, float("nan"), 0.0]), ("dog", VEC["dog"])], "nan.tsv")
    with pytest.raises(ValueError, match=r"NaN or inf .*\['cat'\]"):
        load_class_embeddings(nan, ["dog", "cat"])
    zero = _table(tmp_path, [("cat", [0.0, 0.0, 0.0])], "zero.tsv")
    with pytest.raises(ValueError, match="zero vectors.*cat"):
        load_class_embeddings(zero, ["cat"])
    duplicated = _table(tmp_path, [("cat", VEC["cat"]), ("cat", VEC["dog"])], "dup.tsv")
    with pytest.raises(ValueError, match="more than once.*cat"):
        load_class_embeddings(duplicated, ["cat"])
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        load_class_embeddings(tmp_path / "missing.tsv", ["cat"])
    with pytest.raises(ValueError, match="unknown normalisation"):
        load_class_embeddings(path, ["cat"], normalize="max")


def test_write_embedding_table_round_trips_float32_exactly(tmp_path):
    matrix = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    write_embedding_table(tmp_path / "t.tsv", ["a b", "c", "__background__"], matrix)
    names, back = read_embedding_table(tmp_path / "t.tsv")
    assert names == ["a b", "c", "__background__"]
    np.testing.assert_array_equal(back, matrix)


# ---------------------------------------------------------------- word vectors


def _word_file(tmp_path, header=True, extra="", name="vec.txt"):
    lines = [f"{w} " + " ".join(map(str, v)) + " " for w, v in  # fastText: trailing space
             [("the", [9, 9, 9]), ("cat", VEC["cat"]), ("hot", VEC["hot"]), ("dog", VEC["dog"])]]
    return _write(tmp_path / name, ("4 3\n" if header else "") + "\n".join(lines) + "\n" + extra)


@pytest.mark.parametrize("header", [True, False])
def test_word_vectors_phrase_absent_uses_mean_of_words(tmp_path, header):
    path = _word_file(tmp_path, header=header)
    assert detect_format(path) == "word_vectors"
    out = load_class_embeddings(path, ["hot dog", "Cat"], normalize="none")
    np.testing.assert_allclose(out, [np.mean([VEC["hot"], VEC["dog"]], axis=0), VEC["cat"]])


def test_word_vectors_phrase_present_wins_over_word_mean(tmp_path):
    path = _word_file(tmp_path, extra="hot_dog 0 0 5\nhot-dog 7 7 7\n")
    out = load_class_embeddings(path, ["hot dog"], normalize="none")
    np.testing.assert_array_equal(out, [VEC["dog_phrase"]])


def test_word_vectors_errors(tmp_path):
    path = _word_file(tmp_path)
    with pytest.raises(KeyError, match=r"\['hair drier'\].*words"):
        load_class_embeddings(path, ["cat", "hair drier"])
    bad = _word_file(tmp_path, extra="mouse 1 2\n", name="bad.txt")
    with pytest.raises(ValueError, match=r"bad.txt:6: 'mouse' has 2 values, expected 3"):
        load_class_embeddings(bad, ["mouse"])
    with pytest.raises(ValueError, match="binary word2vec"):
        load_class_embeddings(_write(tmp_path / "w.bin", "x"), ["cat"])


# ---------------------------------------------------------------- npy


def test_npy_with_sidecar_and_explicit_class_list(tmp_path):
    matrix = np.array([VEC["cat"], VEC["dog"]], dtype=np.float32)
    np.save(tmp_path / "emb.npy", matrix)
    with pytest.raises(FileNotFoundError, match="emb.txt"):
        load_class_embeddings(tmp_path / "emb.npy", ["dog"])
    _write(tmp_path / "emb.txt", "cat\nhot dog\n")
    out = load_class_embeddings(tmp_path / "emb.npy", ["hot dog", "cat"], normalize="none")
    np.testing.assert_array_equal(out, matrix[::-1])
    out = load_class_embeddings(tmp_path / "emb.npy", ["b"], normalize="none",
                                class_list=["a", "b"])
    np.testing.assert_array_equal(out, matrix[1:])
    with pytest.raises(ValueError, match="3 class names given for the 2 rows"):
        load_class_embeddings(tmp_path / "emb.npy", ["a"], class_list=["a", "b", "c"])


# ---------------------------------------------------------------- NUS-WIDE pickle


def _nus_pickle(tmp_path):
    rng = np.random.default_rng(0)
    tags = rng.normal(size=(6, 4)).astype(np.float32)
    concepts = np.concatenate([tags[[1, 4]], rng.normal(size=(1, 4))]).astype(np.float32)
    path = tmp_path / "nus.pkl"
    with open(path, "wb") as f:
        pickle.dump([tags, concepts], f, protocol=3)
    return path, tags, concepts


def test_nus_wide_seen_rows_are_tags_not_among_concepts(tmp_path):
    path, tags, concepts = _nus_pickle(tmp_path)
    by_vector = load_nus_wide_glove(path, normalize="none")
    assert by_vector.num_seen == 4 and by_vector.seen_names is None
    np.testing.assert_array_equal(by_vector.seen, tags[[0, 2, 3, 5]])
    np.testing.assert_array_equal(by_vector.unseen, concepts)
    tag_names = ["t0", "sky", "t2", "t3", "dog", "t5"]
    by_name = load_nus_wide_glove(path, tag_names, ["sky", "dog", "zebra"])
    assert by_name.seen_names == ["t0", "t2", "t3", "t5"]
    assert by_name.unseen_names == ["sky", "dog", "zebra"]
    np.testing.assert_allclose(np.linalg.norm(by_name.embeddings, axis=1), 1.0, rtol=1e-6)
    # through the generic loader: rows named tags then concepts
    out = load_class_embeddings(path, ["zebra", "t2"], normalize="none",
                                class_list=tag_names + ["sky", "dog", "zebra"])
    np.testing.assert_array_equal(out, [concepts[2], tags[2]])


def test_nus_wide_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump([Evil(), np.zeros((2, 2), np.float32)], f, protocol=3)
    with pytest.raises(ValueError, match="refusing to load io.open|refusing to load builtins.open"):
        load_nus_wide_glove(path)
    assert not marker.exists()


# ---------------------------------------------------------------- real files (shipped, zsdet://)


def _coco_names():
    lines = Path(resolve_data_path("zsdet://coco_zsd/split_65_15.tsv")).read_text().splitlines()[1:]
    return [line.split("\t")[2] for line in lines]


@pytest.mark.parametrize("name", ["fasttext_suzod", "word2vec", "glove_pl", "fasttext_pl"])
def test_real_coco_tables_cover_the_80_classes(name):
    names = _coco_names()
    assert names == COCO_THING_CLASSES
    emb = load_class_embeddings(f"zsdet://coco_zsd/class_embeddings/{name}.tsv", names,
                                expected_dim=300)
    assert emb.shape == (80, 300)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_real_fasttext_suzod_spectral_scaling():
    path = DEFAULT_EMBEDDINGS  # prepare_coco_zsd.py's default: SUZOD's fastText table
    names = ["__background__", *_coco_names()]
    raw = load_class_embeddings(path, names, normalize="none")
    assert np.linalg.norm(raw.astype(np.float64), ord=2) == pytest.approx(5.9807, abs=1e-4)
    norms = np.linalg.norm(load_class_embeddings(path, names, normalize="spectral"), axis=1)
    assert norms[0] == pytest.approx(0.078, abs=1e-3)  # values stated in the data README
    assert norms[1:].min() == pytest.approx(0.053, abs=1e-3)
    assert norms[1:].max() == pytest.approx(0.849, abs=1e-3)


def test_real_nus_wide_pickle():
    nus = load_nus_wide_glove("zsdet://nus_wide/NUS_WIDE_pretrained_w2v_glove-wiki-gigaword-300")
    assert nus.seen.shape == (925, 300) and nus.unseen.shape == (81, 300)
    assert nus.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(nus.embeddings, axis=1), 1.0, rtol=1e-5)
