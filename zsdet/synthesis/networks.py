"""Two-layer MLPs of the paper (Sec. 4.1): conditional generator, critic and VAE encoder.

All take a visual part and a condition (noise z or a feature x, plus an embedding e) that the
official code concatenates before the first FC layer. Here that first layer is split,
``W [u; e] = W_u u + W_e e``, which is the same function but lets FLF compute ``W_e e`` once per
distinct class of a batch and ``W_z z`` once per sample instead of once per (sample, label) pair.

Initialisation follows the official code: Linear weights N(0, 0.02), biases 0.
Activations are LeakyReLU(0.2) after the hidden layer.
"""
from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConditionalMLP", "ConditionalGenerator", "Critic", "Encoder", "init_weights", "OUTPUT_ACTIVATIONS", "at_least_float32",
           "output_activation"]

OUTPUT_ACTIVATIONS = ("sigmoid", "relu", "none")


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) weights and zero biases for every ``nn.Linear`` inside ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` upcast to float32 when it is bfloat16 / float16, else unchanged (float64 stays float64)."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def output_activation(h: torch.Tensor, kind: str) -> torch.Tensor:
    """Generator output non-linearity, evaluated in at least float32 (bf16 sigmoids saturate coarsely)."""
    h = at_least_float32(h)
    if kind == "sigmoid":
        return torch.sigmoid(h)
    if kind == "relu":
        return F.relu(h)
    return h


class ConditionalMLP(nn.Module):
    """``fc2(dropout(lrelu(W_u u + W_e e + b)))``: the shared body of G, D and E.

    Args:
        in_dim: dim of the visual / noise input u; cond_dim: dim of the embedding e.
        hidden: hidden units; out_dim: output units; dropout: after the hidden activation.
    """

    def __init__(self, in_dim: int, cond_dim: int, hidden: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc_in = nn.Linear(in_dim, hidden, bias=False)
        self.fc_cond = nn.Linear(cond_dim, hidden)
        self.fc_out = nn.Linear(hidden, out_dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        init_weights(self)

    def hidden(self, u_part: torch.Tensor, cond_part: torch.Tensor) -> torch.Tensor:
        """Hidden activations from the precomputed ``fc_in(u)`` and ``fc_cond(e)`` (broadcastable)."""
        return self.dropout(F.leaky_relu(u_part + cond_part, 0.2))

    def forward(self, u: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """u: (B, in_dim), e: (B, cond_dim) -> (B, out_dim)."""
        return self.fc_out(self.hidden(self.fc_in(u), self.fc_cond(e)))


class ConditionalGenerator(ConditionalMLP):
    """G(z, e): noise (B, nz) and embedding (B, a) -> pre-activation feature (B, d)."""

    def forward_pairs(self, z: torch.Tensor, class_emb: torch.Tensor, pair_set: torch.Tensor,
                      pair_class: torch.Tensor) -> torch.Tensor:
        """G(z[pair_set[p]], class_emb[pair_class[p]]) for every pair p in one call.

        Args:
            z: (B, nz) noise, one per set; class_emb: (U, a) embeddings of the batch's distinct classes.
            pair_set: (P,) set index of each pair; pair_class: (P,) row of ``class_emb``.
        Returns:
            (P, d) pre-activation features.
        """
        h = self.hidden(self.fc_in(z)[pair_set], self.fc_cond(class_emb)[pair_class])
        return self.fc_out(h)


class Critic(ConditionalMLP):
    """WGAN critic D(x, e_mu): (B, d), (B, a) -> (B,) unbounded scores."""

    def __init__(self, feature_dim: int, emb_dim: int, hidden: int):
        super().__init__(feature_dim, emb_dim, hidden, 1)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return super().forward(x, e).squeeze(-1)


class Encoder(ConditionalMLP):
    """VAE encoder E(x, e_mu) -> (mu, log_var), each (B, nz)."""

    def __init__(self, feature_dim: int, emb_dim: int, hidden: int, noise_dim: int):
        super().__init__(feature_dim, emb_dim, hidden, 2 * noise_dim)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = super().forward(x, e).chunk(2, dim=-1)
        return mu, log_var
