"""Losses of the two GAN families (paper eqs. 6-7 and f-VAEGAN), computed in float32.

* WGAN-GP critic (eq. 6): ``L_D = E[D(x~)] - E[D(x)] + lambda * E[(||grad_x^ D(x^)||_2 - 1)^2]``
  with ``x^ = a x + (1 - a) x~``, ``a ~ U(0, 1)`` per sample; the critic is conditioned on e_mu.
* Generator: ``-E[D(x~)]`` (+ classifier BCE for f-CLSWGAN, eq. 7; + VAE terms for f-VAEGAN).
* f-VAEGAN's VAE terms (as in the official code): reconstruction summed over feature dims
  (binary cross-entropy on [0, 1] features, or squared error) and KL to N(0, I), both averaged
  over the batch.
"""
from typing import Callable, Tuple

import torch
from torch.nn import functional as F

__all__ = ["gradient_penalty", "critic_loss", "generator_adversarial_loss", "vae_loss", "multilabel_bce",
           "mode_seeking_penalty", "RECON_LOSSES"]

RECON_LOSSES = ("bce", "mse")


def gradient_penalty(grad: torch.Tensor) -> torch.Tensor:
    """``mean_b (||grad_b||_2 - 1)^2`` of critic input gradients ``grad`` (B, d), float32 scalar."""
    return ((grad.float().norm(2, dim=1) - 1) ** 2).mean()


def critic_loss(critic: Callable, real: torch.Tensor, fake: torch.Tensor, cond: torch.Tensor,
                mix: torch.Tensor, lambda_gp: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """WGAN-GP critic loss with a single critic call on ``[real; fake; interpolates]``.

    One call (instead of three) keeps a DDP-wrapped critic to one forward per backward and gives
    larger matrix products. The critic returns the input gradient of the interpolates itself
    (see :meth:`zsdet.synthesis.networks.Critic.forward`), differentiable w.r.t. its weights.

    Args:
        critic: ``critic(x (N, d), e (N, a), grad_rows=k) -> (scores (N,), grad_x of the last k rows (k, d))``.
        real, fake: (B, d) features (no gradient needed); cond: (B, a) e_mu.
        mix: (B,) interpolation weights a ~ U(0, 1).
        lambda_gp: penalty coefficient.
    Returns:
        (loss, wasserstein estimate E[D(x)] - E[D(x~)], gradient penalty) float32 scalars.
    """
    b = len(real)
    interp = mix[:, None] * real + (1 - mix[:, None]) * fake
    scores, grad = critic(torch.cat([real, fake, interp]).detach(), cond.repeat(3, 1), grad_rows=b)
    scores = scores.float()
    gp = gradient_penalty(grad)
    wasserstein = scores[:b].mean() - scores[b:2 * b].mean()
    return -wasserstein + lambda_gp * gp, wasserstein.detach(), gp.detach()


def generator_adversarial_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """``-E[D(x~)]`` for critic scores (B,) of synthesized features."""
    return -fake_scores.float().mean()


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor,
             kind: str = "bce") -> Tuple[torch.Tensor, torch.Tensor]:
    """f-VAEGAN's (reconstruction, KL) terms, each summed over dims and averaged over the batch.

    Args:
        recon: (B, d) decoded features; x: (B, d) targets ([0, 1] for ``"bce"``).
        mu, log_var: (B, nz) encoder outputs.
        kind: ``"bce"`` (official; needs sigmoid outputs) or ``"mse"`` (squared error).
    """
    recon, x = recon.float(), x.float()
    if kind == "bce":  # log clamped like F.binary_cross_entropy (which autocast refuses on CUDA)
        log_p = torch.log(recon.clamp_min(1e-12))
        log_q = torch.log((1 - recon).clamp_min(1e-12))
        rec = -(x * log_p + (1 - x) * log_q).sum(1).mean()
    elif kind == "mse":
        rec = ((recon - x) ** 2).sum(1).mean()
    else:
        raise ValueError(f"SYNTHESIS.VAE_RECON must be one of {RECON_LOSSES}, got {kind!r}")
    mu, log_var = mu.float(), log_var.float()
    kl = (-0.5 * (1 + log_var - mu ** 2 - log_var.exp()).sum(1)).mean()
    return rec, kl


def multilabel_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of (B, K) logits against {0, 1} targets (f-CLSWGAN's eq. 7 term)."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


def mode_seeking_penalty(fake_1: torch.Tensor, fake_2: torch.Tensor, z_1: torch.Tensor, z_2: torch.Tensor,
                         eps: float = 1e-5) -> torch.Tensor:
    """Mode-seeking term ``1 / (L_ms + eps)`` with ``L_ms = mean|G(z_1) - G(z_2)| / mean|z_1 - z_2|``
    for two noise samples of the same label sets (MSGAN; SUZOD's generator loss, weight 0.01): large
    when the generator ignores its noise. fake_*: (B, d); z_*: (B, nz)."""
    ratio = (fake_1.float() - fake_2.float()).abs().mean() / (z_1.float() - z_2.float()).abs().mean()
    return 1.0 / (ratio + eps)
