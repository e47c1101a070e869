"""benchmarks/zsd_unseen_separability.py: its scores on constructed cases with known answers (the
detector part needs a trained world and is run by the benchmark itself)."""
import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/zsd_unseen_separability.py")


def test_auroc_and_flagged_share_known_answers(bench):
    assert bench.auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert bench.auroc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert bench.auroc(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])) == 0.5  # ties count half
    assert bench.auroc(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 3.0])) == 0.25
    seen = torch.arange(100.0)
    assert bench.flagged_share(torch.tensor([99.5, 50.0, 200.0, 94.0]), seen, 5.0) == 0.5  # above the 95 % quantile


def test_scores_on_gaussian_worlds(bench):
    """Held-out RoIs far from every seen class are flagged by both scores; RoIs drawn like the seen
    classes are flagged about as often as the seen cost, and the oracle is at chance."""
    gen = torch.Generator().manual_seed(0)
    means = 4 * torch.randn(3, 6, generator=gen)
    labels = torch.arange(3000) % 3
    bank = means[labels] + torch.randn(3000, 6, generator=gen)
    seen = means[labels[:600]] + torch.randn(600, 6, generator=gen)
    for shift, expected in ((12.0, (0.95, 1.01)), (0.0, (0.0, 0.15))):
        held = means[labels[:600]] + torch.randn(600, 6, generator=gen) + shift * torch.eye(6)[0]
        novelty = bench.mahalanobis_novelty(bank, labels, torch.cat([held, seen]))
        assert expected[0] <= bench.flagged_share(novelty[:600], novelty[600:], 5.0) <= expected[1]
        x = torch.cat([held, seen])
        is_held = torch.arange(1200) < 600
        oracle = bench.oracle_linear_scores(x, is_held, torch.arange(1200) // 4)
        auc = bench.auroc(oracle[is_held], oracle[~is_held])
        assert auc > 0.95 if shift else 0.4 < auc < 0.6


def test_mlp_oracle_sees_what_a_linear_one_cannot(bench):
    """Held-out RoIs on a shell around the seen ones (same mean, larger radius): no linear score
    separates them, the MLP oracle does; with both drawn alike the MLP is at chance too."""
    gen = torch.Generator().manual_seed(0)
    seen = torch.randn(800, 4, generator=gen)
    direction = torch.randn(800, 4, generator=gen)
    shell = 4.5 * direction / direction.norm(dim=1, keepdim=True)
    is_held = torch.arange(1600) < 800
    images = torch.arange(1600) // 4
    for held, linear_range, mlp_range in ((shell, (0.35, 0.65), (0.95, 1.01)),
                                         (torch.randn(800, 4, generator=gen), (0.4, 0.6), (0.4, 0.6))):
        x = torch.cat([held, seen])
        linear = bench.oracle_linear_scores(x, is_held, images)
        mlp = bench.oracle_mlp_scores(x, is_held, images)
        assert linear_range[0] < bench.auroc(linear[is_held], linear[~is_held]) < linear_range[1]
        assert mlp_range[0] < bench.auroc(mlp[is_held], mlp[~is_held]) < mlp_range[1]
    assert torch.equal(mlp, bench.oracle_mlp_scores(x, is_held, images))  # seeded


@pytest.mark.parametrize("argv", [["--splits", "9"], ["--splits", "x"], ["--images", "1"], ["--seen-cost", "0"],
                                  ["--family", "shapes", "--splits", "4"], ["--family", "coco"]])
def test_bad_arguments_are_refused(bench, argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_family_picks_the_worlds(bench):
    """--family shapes reads the shapes' worlds (0..3); without it, the dense ones (0..8)."""
    shapes = bench.parse_args(["--family", "shapes", "--splits", "0,3"])
    assert shapes.splits == [0, 3] and shapes.world_family.prefix == "zsd_shapes"
    assert shapes.world_family.shared_config == "zsd_shapes_R18_FPN.yaml"
    dense = bench.parse_args(["--splits", "8"])
    assert dense.splits == [8] and dense.world_family.prefix == "zsd_dense"


def test_summed_standardised_scores_by_their_references(bench):
    a, b = torch.tensor([1.0, 3.0]), torch.tensor([10.0, 30.0])
    ref_a, ref_b = torch.tensor([0.0, 2.0]), torch.tensor([10.0, 20.0, 30.0])  # means 1 and 20, sds sqrt(2) and 10
    expected = torch.tensor([0 / 2 ** 0.5 - 1.0, 2 / 2 ** 0.5 + 1.0], dtype=torch.float64)
    assert torch.allclose(bench.summed_standardised((a, b), (ref_a, ref_b)), expected)


@pytest.mark.parametrize("folds,ensemble", [(0, 0), (2, 0), (0, 3)])
def test_a_candidate_run_is_scored_with_the_head_it_trained(bench, tmp_path, folds, ensemble):
    """The candidate's classifier is rebuilt from its run's config, the seen group's leave-out MLPs
    (ZSD.CLASSIFIER.SEEN_GROUP_FOLDS) or ensemble (SEEN_GROUP_ENSEMBLE) included, and scored by its highest
    seen probability."""
    from types import SimpleNamespace

    from zsdet.config import get_zsdet_cfg
    from zsdet.engine.checkpoints import CLASSIFIER_PREFIX
    from zsdet.modeling.mlp_classifier import build_box_head
    from zsdet.modeling.zsd_predictor import gzsd_probs

    cfg = get_zsdet_cfg()
    cfg.ZSD.CLASSIFIER.HIDDEN_UNITS, cfg.ZSD.CLASSIFIER.HIDDEN_GROUPS = 4, "seen"
    cfg.ZSD.CLASSIFIER.SEEN_GROUP_FOLDS, cfg.ZSD.CLASSIFIER.SEEN_GROUP_ENSEMBLE = folds, ensemble
    (tmp_path / "config.yaml").write_text(cfg.dump())
    split = SimpleNamespace(num_classes=4, seen_ids=(0, 2, 3), unseen_ids=(1,))
    torch.manual_seed(0)
    head = build_box_head("seen_mlp", 8, 5, 4, split.seen_ids, (folds or ensemble, bool(folds)))
    torch.save({"model": {CLASSIFIER_PREFIX + k: v for k, v in head.state_dict().items()}}, tmp_path / "model_zsd.pth")
    x = torch.randn(6, 8)
    with torch.no_grad():
        expected = gzsd_probs(head(x), torch.tensor([False, True, False, False, False]), "grouped", 0.0, 0.0)
    with torch.no_grad():
        got = bench.seen_probability(bench.run_classifier(str(tmp_path), split, 8)(x), split)
    torch.testing.assert_close(got, expected[:, [0, 2, 3]].max(1).values)


def test_the_candidates_generator_seed_picks_its_run(bench, tmp_path):
    """--seed k scores the candidate's seed<k> run (seed 0 unless given); a negative seed is refused."""
    args = bench.parse_args(["--output-dir", str(tmp_path), "--candidate", "flf_ens6", "--seed", "2"])
    assert bench.candidate_run_dir(args, 3) == str(tmp_path / "split3" / "flf_ens6" / "seed2")
    assert bench.candidate_run_dir(bench.parse_args(["--output-dir", "o"]), 0).endswith("seed0")
    with pytest.raises(SystemExit):
        bench.parse_args(["--seed", "-1"])


def test_knn_novelty_known_answers(bench):
    bank = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[3.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    torch.testing.assert_close(bench.knn_novelty(bank, x, k=1), torch.tensor([0.0, 1 - 2 ** -0.5, 1.0]))
    torch.testing.assert_close(bench.knn_novelty(bank, x, k=3), torch.tensor([1.0, 1 - 2 ** -0.5, 2.0]))
    many = torch.randn(3000, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(bench.knn_novelty(bank, many, k=2),  # chunked as one
                               torch.cat([bench.knn_novelty(bank, part, k=2) for part in many.split(7)]))


def test_seen_energy_ignores_unseen_and_background_columns(bench):
    logits = torch.tensor([[0.0, 0.0, 9.0, 5.0], [3.0, -50.0, -9.0, 9.0]])  # seen 0, 1; unseen 2; background
    torch.testing.assert_close(bench.seen_energy(logits, [0, 1]),
                               -torch.logsumexp(torch.tensor([[0.0, 0.0], [3.0, -50.0]]), dim=1))
    assert bench.seen_energy(logits, [0, 1])[0] > bench.seen_energy(logits, [0, 1])[1]  # no seen class fits row 0
