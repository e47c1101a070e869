"""benchmarks/zsd_unseen_placement.py: its scores and its ridge map on constructed cases with known
answers (the world part needs a trained world and is run by the benchmark itself)."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/zsd_unseen_placement.py")


REAL = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # 3 seen classes, then 1 held-out
IS_SEEN = np.array([True, True, True, False])


def test_perfect_predictions(bench):
    scores = bench.placement_scores(REAL.copy(), np.arange(4), REAL, IS_SEEN, np.zeros(2))
    assert scores == {"cosine": 1.0, "rank": 0.0, "nearest_own": 100.0, "nearest_seen": 0.0, "norm_ratio": 1.0}


def test_a_held_out_class_put_on_a_seen_one(bench):
    """The held-out class (own mean (0, -1)) predicted at seen class 0's mean (1, 0): orthogonal
    offsets; distances to the 4 real means 0, sqrt 2, 2, sqrt 2, and rank counts only the strictly
    nearer ones (class 0; class 1 ties)."""
    scores = bench.placement_scores(np.array([[1.0, 0.0]]), np.array([3]), REAL, IS_SEEN, np.zeros(2))
    assert scores["cosine"] == pytest.approx(0.0)
    assert scores["rank"] == 1.0
    assert scores["nearest_own"] == 0.0 and scores["nearest_seen"] == 100.0
    assert scores["norm_ratio"] == pytest.approx(1.0)


def test_half_right(bench):
    """Two predictions: one near its own mean, one opposite its own mean (cosine -1) and nearest to
    a seen class: means of the two."""
    predicted = np.array([[0.1, -0.9], [0.0, 0.9]])  # held-out class 3 twice: once right, once at class 1
    scores = bench.placement_scores(predicted, np.array([3, 3]), REAL, IS_SEEN, np.zeros(2))
    cos_first = 0.9 / np.linalg.norm([0.1, -0.9])
    assert scores["cosine"] == pytest.approx((cos_first - 1.0) / 2)
    assert scores["nearest_own"] == 50.0 and scores["nearest_seen"] == 50.0
    assert scores["rank"] == pytest.approx((0 + 3) / 2)  # the second: classes 0, 1 and 2 are nearer
    assert scores["norm_ratio"] == pytest.approx((np.linalg.norm([0.1, -0.9]) + 0.9) / 2)


def test_ridge_map_recovers_a_linear_map_and_keeps_the_intercept(bench):
    rng = np.random.default_rng(0)
    emb, a, b = rng.normal(size=(30, 5)), rng.normal(size=(5, 3)), rng.normal(size=3)
    weights = bench.ridge_map(emb, emb @ a + b, ridge=1e-9)
    new = rng.normal(size=(4, 5))
    np.testing.assert_allclose(bench.apply_ridge(weights, new), new @ a + b, atol=1e-6)
    # a huge ridge leaves only the (unpenalised) intercept: every prediction is the targets' mean
    targets = emb @ a + b
    flat = bench.apply_ridge(bench.ridge_map(emb, targets, ridge=1e12), new)
    np.testing.assert_allclose(flat, np.broadcast_to(targets.mean(0), flat.shape), atol=1e-6)


def test_class_means(bench):
    x = np.array([[0.0, 2.0], [2.0, 4.0], [5.0, 5.0]])
    np.testing.assert_allclose(bench.class_means(x, np.array([1, 1, 0]), [1, 0]), [[1.0, 3.0], [5.0, 5.0]])


@pytest.mark.parametrize("argv", [["--splits", "9"], ["--splits", "x"], ["--images", "1"], ["--per-class", "0"]])
def test_bad_arguments_are_refused(bench, argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_world_result_reads_the_worlds_rois_of_the_dense_family(bench, monkeypatch, tmp_path):
    """The world part asks zsd_unseen_separability.world_rois for the dense worlds' RoIs with the
    family its arguments name (a missing family argument broke the benchmark once)."""
    asked = []

    class Stop(Exception):
        pass

    def fake_world_rois(world, output_dir, num_images, family):
        asked.append((world, output_dir, num_images, family))
        raise Stop

    monkeypatch.setattr(bench, "world_rois", fake_world_rois)
    args = bench.parse_args(["--output-dir", str(tmp_path), "--splits", "2", "--images", "7"])
    with pytest.raises(Stop):
        bench.world_result(2, args)
    assert asked == [(2, str(tmp_path), 7, args.world_family)] and args.world_family.prefix == "zsd_dense"
