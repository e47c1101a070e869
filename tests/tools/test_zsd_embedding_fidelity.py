"""benchmarks/zsd_embedding_fidelity.py: per fidelity an embedding table of the same classes, the
held-out attribute R² of each world, and one candidate of the held-out validation that differs in
``ZSD.EMBEDDINGS_FILE`` only (the validation itself faked)."""
import json
import os

import numpy as np
import pytest

from zsdet.data.datasets import dense_scenes
from zsdet.data.datasets.dense_scenes import DenseScenesConfig
from zsdet.data.embeddings import load_class_embeddings


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/zsd_embedding_fidelity.py")


def test_each_fidelity_is_a_candidate_that_changes_only_the_embeddings(bench, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(bench.zsd_held_out_validation, "main", calls.append)
    bench.main(["--fidelities", "0.6,1.0", "--splits", "1,4", "--output-dir", str(tmp_path)])
    (argv,) = calls
    table = str(tmp_path / "embeddings_f1.tsv")
    assert argv == ["--candidate", "flf_f0.6", "flf.yaml",  # the datasets' own embeddings: no override
                    "--candidate", "flf_f1", "flf.yaml", "ZSD.EMBEDDINGS_FILE", table,
                    "--splits", "1,4", "--seeds", "1", "--output-dir", str(tmp_path)]
    config = DenseScenesConfig(embedding_fidelity=1.0)
    np.testing.assert_allclose(load_class_embeddings(table, config.class_names),
                               dense_scenes.dense_class_embeddings(config), rtol=1e-6)
    assert not os.path.exists(tmp_path / "embeddings_f0.6.tsv")
    r2 = json.loads((tmp_path / "attribute_r2.json").read_text())
    assert set(r2) == {"flf_f0.6", "flf_f1"} and set(r2["flf_f1"]) == {"1", "4"}
    assert all(r2["flf_f0.6"][k] < r2["flf_f1"][k] for k in ("1", "4"))  # truer embeddings describe more


def test_world_r2_scores_the_held_out_classes_not_the_absent_ones():
    world = DenseScenesConfig(**dense_scenes.held_out_world(0))
    assert len(world.unseen_ids) == 16 and len(world.absent) == 8
    codes = dense_scenes.attribute_codes(world)
    x = np.c_[dense_scenes.dense_class_embeddings(world).astype(np.float64), np.ones(40)]
    absent = {world.class_triples.index(t) for t in world.absent}
    held_out = [i for i in world.unseen_ids if i not in absent]
    coef = np.linalg.solve(x[world.seen_ids].T @ x[world.seen_ids] + 0.1 * np.eye(49), x[world.seen_ids].T
                           @ codes[world.seen_ids])
    expected = 1 - (((x[held_out] @ coef - codes[held_out]) ** 2).sum()
                    / ((codes[held_out] - codes[world.seen_ids].mean(0)) ** 2).sum())
    assert dense_scenes.attribute_r2(world) == pytest.approx(expected)


@pytest.mark.parametrize("argv", [["--fidelities", "1.5"], ["--fidelities", "a"], ["--splits", "9"],
                                  ["--seeds", "0"], ["--method", "no_such.yaml"]])
def test_bad_arguments_are_refused(bench, argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_attribute_codes_are_one_more_candidate_with_their_own_table(bench, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(bench.zsd_held_out_validation, "main", calls.append)
    bench.main(["--fidelities", "", "--attribute-codes", "--splits", "2", "--output-dir", str(tmp_path)])
    (argv,) = calls
    table = str(tmp_path / "attribute_codes.tsv")
    assert argv == ["--candidate", "flf_codes", "flf.yaml", "ZSD.EMBEDDINGS_FILE", table,
                    "--splits", "2", "--seeds", "1", "--output-dir", str(tmp_path)]
    config = DenseScenesConfig()
    vectors = load_class_embeddings(table, config.class_names, normalize="none")
    np.testing.assert_array_equal(vectors, dense_scenes.attribute_codes(config))
    assert set(vectors.sum(1)) == {3.0}  # one colour, one texture, one shape each
    r2 = json.loads((tmp_path / "attribute_r2.json").read_text())
    assert set(r2) == {"flf_codes"} and r2["flf_codes"]["2"] > 0.95  # the codes describe the held-out classes
    world = DenseScenesConfig(**dense_scenes.held_out_world(2))
    assert dense_scenes.attribute_r2(world) < 0.9  # the benchmark's own embeddings less so


def test_no_class_vectors_at_all_is_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--fidelities", ""])
