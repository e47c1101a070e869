"""WGAN-GP, VAE and classifier losses against hand computations."""
import math

import torch

from zsdet.synthesis.losses import critic_loss, gradient_penalty, vae_loss


def test_gradient_penalty_of_a_linear_critic():
    # D(x, e) = w . x + u . e  ->  grad_x D = w for every sample, penalty = (||w|| - 1)^2 = (5 - 1)^2
    w, u = torch.tensor([3.0, 4.0]), torch.tensor([1.0])
    critic = lambda x, e: x @ w + e @ u  # noqa: E731
    real, fake = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    cond = torch.tensor([[0.5], [-1.0]])
    loss, wasserstein, gp = critic_loss(critic, real, fake, cond, torch.tensor([0.3, 0.9]), lambda_gp=10.0)
    assert gp.item() == 16.0
    # E[D(real)] = mean(3 + 0.5, 8 - 1) = 5.25 ; E[D(fake)] = mean(0 + 0.5, 7 - 1) = 3.25
    assert math.isclose(wasserstein.item(), 2.0, rel_tol=1e-6)
    assert math.isclose(loss.item(), -2.0 + 160.0, rel_tol=1e-6)


def test_gradient_penalty_of_a_quadratic_critic_uses_the_interpolates():
    # D(x) = ||x||^2 -> grad = 2 x_hat, x_hat = a real + (1 - a) fake
    critic = lambda x, e: (x ** 2).sum(1)  # noqa: E731
    real = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    fake = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    mix = torch.tensor([0.5, 0.25])
    _, _, gp = critic_loss(critic, real, fake, torch.zeros(2, 1), mix, lambda_gp=1.0)
    x_hat = [[0.5, 0.5], [0.5, 0.75]]
    norms = [2 * math.hypot(*row) for row in x_hat]
    expected = sum((n - 1) ** 2 for n in norms) / 2
    assert math.isclose(gp.item(), expected, rel_tol=1e-6)
    assert math.isclose(gradient_penalty(torch.tensor([[0.0, 3.0]])).item(), 4.0)


def test_penalty_gradient_reaches_the_critic_parameters():
    """create_graph=True: the penalty is differentiable w.r.t. the critic's weights (double backward)."""
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    critic = lambda x, e: torch.tanh(x @ w)  # noqa: E731
    real, fake = torch.rand(4, 2), torch.rand(4, 2)
    loss, _, gp = critic_loss(critic, real, fake, torch.zeros(4, 1), torch.rand(4), lambda_gp=10.0)
    loss.backward()
    assert w.grad is not None and bool(torch.isfinite(w.grad).all()) and w.grad.abs().sum() > 0


def test_vae_loss_by_hand():
    recon = torch.tensor([[0.5, 0.25]])
    x = torch.tensor([[1.0, 0.0]])
    mu, log_var = torch.tensor([[1.0]]), torch.tensor([[0.0]])
    rec, kl = vae_loss(recon, x, mu, log_var, "bce")
    assert math.isclose(rec.item(), -(math.log(0.5) + math.log(0.75)), rel_tol=1e-6)
    assert math.isclose(kl.item(), 0.5, rel_tol=1e-6)  # -0.5 * (1 + 0 - 1 - 1)
    rec, _ = vae_loss(recon, x, mu, log_var, "mse")
    assert math.isclose(rec.item(), 0.25 + 0.0625, rel_tol=1e-6)
