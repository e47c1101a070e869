"""WGAN-GP, VAE and classifier losses against hand computations."""
import math
import pytest

import torch

from zsdet.synthesis.losses import critic_loss, gradient_penalty, vae_loss
from zsdet.synthesis.networks import Critic


def with_autograd_input_grad(score_fn):
    """Turn a plain score function into the critic protocol, input gradient by autograd."""
    def critic(x, e, grad_rows):
        x = x.clone().requires_grad_(True)
        scores = score_fn(x, e)
        (grad,) = torch.autograd.grad(scores[-grad_rows:].sum(), x, create_graph=True)
        return scores, grad[-grad_rows:]
    return critic


def test_gradient_penalty_of_a_linear_critic():
    # D(x, e) = w . x + u . e  ->  grad_x D = w for every sample, penalty = (||w|| - 1)^2 = (5 - 1)^2
    w, u = torch.tensor([3.0, 4.0]), torch.tensor([1.0])
    critic = with_autograd_input_grad(lambda x, e: x @ w + e @ u)
    real, fake = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    cond = torch.tensor([[0.5], [-1.0]])
    loss, wasserstein, gp = critic_loss(critic, real, fake, cond, torch.tensor([0.3, 0.9]), lambda_gp=10.0)
    assert gp.item() == 16.0
    # E[D(real)] = mean(3 + 0.5, 8 - 1) = 5.25 ; E[D(fake)] = mean(0 + 0.5, 7 - 1) = 3.25
    assert math.isclose(wasserstein.item(), 2.0, rel_tol=1e-6)
    assert math.isclose(loss.item(), -2.0 + 160.0, rel_tol=1e-6)


def test_gradient_penalty_of_a_quadratic_critic_uses_the_interpolates():
    # D(x) = ||x||^2 -> grad = 2 x_hat, x_hat = a real + (1 - a) fake
    critic = with_autograd_input_grad(lambda x, e: (x ** 2).sum(1))
    real = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    fake = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    mix = torch.tensor([0.5, 0.25])
    _, _, gp = critic_loss(critic, real, fake, torch.zeros(2, 1), mix, lambda_gp=1.0)
    x_hat = [[0.5, 0.5], [0.5, 0.75]]
    norms = [2 * math.hypot(*row) for row in x_hat]
    expected = sum((n - 1) ** 2 for n in norms) / 2
    assert math.isclose(gp.item(), expected, rel_tol=1e-6)
    assert math.isclose(gradient_penalty(torch.tensor([[0.0, 3.0]])).item(), 4.0)


def test_closed_form_critic_gradient_equals_double_backward():
    """Critic's closed-form input gradient and the penalty's weight gradients match the textbook
    autograd.grad(create_graph=True) formulation in float64."""
    torch.manual_seed(0)
    critic = Critic(6, 3, 5).double()
    with torch.no_grad():
        for p in critic.parameters():
            p.normal_(0, 1)
    real, fake = torch.rand(4, 6, dtype=torch.float64), torch.rand(4, 6, dtype=torch.float64)
    cond, mix = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, dtype=torch.float64)

    loss, _, gp = critic_loss(critic, real, fake, cond, mix, lambda_gp=10.0)
    grads = torch.autograd.grad(loss, list(critic.parameters()))

    reference = with_autograd_input_grad(lambda x, e: critic(x, e))
    ref_loss, _, ref_gp = critic_loss(reference, real, fake, cond, mix, lambda_gp=10.0)
    ref_grads = torch.autograd.grad(ref_loss, list(critic.parameters()))
    assert gp.item() > 0.1
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_vae_loss_by_hand():
    recon = torch.tensor([[0.5, 0.25]])
    x = torch.tensor([[1.0, 0.0]])
    mu, log_var = torch.tensor([[1.0]]), torch.tensor([[0.0]])
    rec, kl = vae_loss(recon, x, mu, log_var, "bce")
    assert math.isclose(rec.item(), -(math.log(0.5) + math.log(0.75)), rel_tol=1e-6)
    assert math.isclose(kl.item(), 0.5, rel_tol=1e-6)  # -0.5 * (1 + 0 - 1 - 1)
    rec, _ = vae_loss(recon, x, mu, log_var, "mse")
    assert math.isclose(rec.item(), 0.25 + 0.0625, rel_tol=1e-6)


def test_mode_seeking_penalty():
    from zsdet.synthesis.losses import mode_seeking_penalty
    z1, z2 = torch.zeros(4, 3), torch.ones(4, 3)  # mean |z1 - z2| = 1
    fake1, fake2 = torch.zeros(4, 5), torch.full((4, 5), 0.5)  # mean |G(z1) - G(z2)| = 0.5
    assert mode_seeking_penalty(fake1, fake2, z1, z2).item() == pytest.approx(1 / (0.5 + 1e-5))
    # a generator that ignores its noise is penalised heavily
    assert mode_seeking_penalty(fake1, fake1.clone(), z1, z2).item() == pytest.approx(1e5)
