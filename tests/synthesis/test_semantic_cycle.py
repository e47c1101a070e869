"""The semantic cycle term: the closed-form regressor, the loss on known cases, the unseen singles,
and the trainer with the term (it trains, resumes exactly, and moves unseen features onto the
regressor's expectation)."""
import json

import pytest
import torch

from zsdet.synthesis import SynthesisTrainer, TensorFeatureSource
from zsdet.synthesis.semantic_cycle import (SemanticRegressor, fit_semantic_regressor, semantic_cycle_loss,
                                            unseen_singles)

from synthesis_helpers import compositional_problem, small_cfg


def linear_data(n=3000, d=12, a=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g)
    w, b = torch.randn(a, d, generator=g), torch.randn(a, generator=g)
    return x, x @ w.T + b


def test_regressor_recovers_a_linear_map_whatever_the_batching():
    x, e = linear_data()
    whole = fit_semantic_regressor(lambda: [(x, e)], 12, 5, "cpu")
    batched = fit_semantic_regressor(lambda: zip(x.split(401), e.split(401)), 12, 5, "cpu")
    assert torch.allclose(whole.weight, batched.weight, atol=1e-5)
    assert torch.allclose(whole.bias, batched.bias, atol=1e-5)
    assert not whole.weight.requires_grad
    with torch.no_grad():
        cos = torch.cosine_similarity(whole(x), e, dim=1)
    assert cos.mean() > 0.99
    assert whole.real_loss.item() == pytest.approx(1 - cos.mean().item(), abs=1e-5)
    assert batched.real_loss.item() == pytest.approx(whole.real_loss.item(), abs=1e-6)


def test_regressor_without_data_is_an_error():
    with pytest.raises(ValueError, match="no training feature"):
        fit_semantic_regressor(lambda: [], 4, 2, "cpu")


def test_cycle_loss_on_known_cases():
    identity = SemanticRegressor(3, 3)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(3))
        identity.bias.zero_()
        identity.real_loss.fill_(0.25)
    e = torch.tensor([[1.0, 0, 0], [0, 2.0, 0]])
    assert semantic_cycle_loss(identity, 3 * e, e).item() == pytest.approx(0, abs=1e-6)  # same direction
    assert semantic_cycle_loss(identity, e.flip(0), e).item() == pytest.approx(1)  # orthogonal
    assert semantic_cycle_loss(identity, -e, e).item() == pytest.approx(2)  # opposite
    # the floor: only what the batch mean exceeds the real features' mean loss
    assert semantic_cycle_loss(identity, e.flip(0), e, floor=True).item() == pytest.approx(0.75)
    assert semantic_cycle_loss(identity, 3 * e, e, floor=True).item() == 0
    half = torch.stack([3 * e[0], e[0]])  # losses 0 and 1: mean 0.5
    assert semantic_cycle_loss(identity, half, e, floor=True).item() == pytest.approx(0.25)


def test_unseen_singles_are_balanced_single_classes():
    sets = unseen_singles(torch.tensor([3, 7, 9]), 64)
    assert sets.idx.shape == (63, 1) and bool(sets.mask.all())
    assert torch.bincount(sets.idx[:, 0], minlength=10)[[3, 7, 9]].tolist() == [21, 21, 21]
    assert len(unseen_singles(torch.tensor([1, 2, 3, 4]), 1)) == 4  # at least every class once


@pytest.fixture(scope="module")
def tiny():
    return compositional_problem(n_train=160, n_test=20, dim=16)


def build(cfg, problem, out):
    return SynthesisTrainer.from_config(cfg, problem.emb, problem.x_train.shape[1], str(out))


@pytest.mark.parametrize("gan", ["fclswgan", "fvaegan"])
def test_trainer_logs_the_term_and_keeps_the_regressor(tiny, tmp_path, gan):
    extra = {"VAE_RECON": "mse"} if gan == "fvaegan" else {}
    train = TensorFeatureSource(tiny.x_train, tiny.y_train)
    for weight in (0.0, 1.0):
        out = tmp_path / str(weight)
        trainer = build(small_cfg(FUSION="clf", GAN=gan, EPOCHS=1, SEMANTIC_WEIGHT=weight, **extra), tiny, out)
        trainer.fit(train)
        (line,) = (out / "metrics.jsonl").read_text().splitlines()
        assert (json.loads(line)["semantic_cycle"] > 0) == (weight > 0)
        saved = torch.load(out / "last_checkpoint.pth", weights_only=True)["models"]
        assert ("semantic_regressor" in saved) == (weight > 0)
    assert trainer.unseen_classes.tolist() == list(range(tiny.num_seen, len(tiny.emb)))


def unseen_figures(trainer, regressor, problem):
    """(cycle term of synthesized features of every unseen class, 50 each, in scaled units;
    mean distance of their class means to the real single-label unseen class means, data units)."""
    classes = torch.arange(problem.num_seen, len(problem.emb))
    unseen = unseen_singles(classes, 50 * len(classes))
    feats, _ = trainer.synthesize(unseen, 1, seed=0)
    with torch.no_grad():
        cycle = semantic_cycle_loss(regressor, trainer.scaler.transform(feats), problem.emb[unseen.idx[:, 0]]).item()
    single = problem.y_test.sum(1) == 1
    real_class = problem.y_test[single].argmax(1) + problem.num_seen
    distance = torch.stack([(problem.x_test[single][real_class == c].mean(0) - feats[unseen.idx[:, 0] == c].mean(0))
                            .norm() for c in classes]).mean().item()
    return cycle, distance


def test_the_term_moves_unseen_features_towards_real_unseen_ones(tmp_path):
    problem = compositional_problem(n_train=600, dim=16)
    train = TensorFeatureSource(problem.x_train, problem.y_train)
    figures, regressor = {}, None
    for weight in (1.0, 0.0):  # the weighted run first: its regressor (the same for both) scores both
        trainer = build(small_cfg(FUSION="clf", EPOCHS=8, LR=5e-4, SEMANTIC_WEIGHT=weight, VAL_FRACTION=0.0),
                        problem, tmp_path / str(weight))
        trainer.fit(train)
        regressor = regressor or trainer.semantic_regressor
        figures[weight] = unseen_figures(trainer, regressor, problem)
    (cycle_on, distance_on), (cycle_off, distance_off) = figures[1.0], figures[0.0]
    assert cycle_on < 0.5 * cycle_off, figures
    assert distance_on < 0.8 * distance_off, figures
