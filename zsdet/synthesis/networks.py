"""Two-layer MLPs of the paper (Sec. 4.1): conditional generator, critic and VAE encoder.

All take a visual part and a condition (noise z or a feature x, plus an embedding e) that the
official code concatenates before the first FC layer (``fc1``). The critic stores that layer split,
``W [u; e] = W_u u + W_e e`` (the same function), so its input gradient can use W_u alone.
Layers are :class:`~zsdet.synthesis.amp_linear.AmpLinear` (``nn.Linear`` with cached bf16
weights under autocast).

Initialisation follows the official code: Linear weights N(0, 0.02), biases 0.
Activations are LeakyReLU(0.2) after the hidden layer.
"""
from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .amp_linear import AmpLinear

__all__ = ["ConditionalMLP", "ConditionalGenerator", "Critic", "Encoder", "init_weights", "OUTPUT_ACTIVATIONS",
           "PAIR_ROW_MULTIPLE", "at_least_float32", "output_activation"]

OUTPUT_ACTIVATIONS = ("sigmoid", "clamp", "sparse_sigmoid", "relu", "none")
SPARSE_MARGIN = 0.1  # "sparse_sigmoid": the sigmoid stretched to (-m, 1 + m), then clamped to [0, 1]
PAIR_ROW_MULTIPLE = 64  # (set, label) pair rows are padded to a multiple of this (see forward_pairs)


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


def output_activation(h: torch.Tensor, kind: str, full_precision: bool = True) -> torch.Tensor:
    """Generator output non-linearity; ``full_precision``: evaluated in at least float32 (for final
    outputs: a bf16 sigmoid saturates to exactly 1 early, which breaks the BCE reconstruction).

    ``"sigmoid"`` (official): in (0, 1), never exactly 0; ``"clamp"``: ``min(max(h, 0), 1)``, in
    [0, 1] like the min-max-scaled real features and exactly 0 where post-ReLU box features are 0;
    ``"sparse_sigmoid"``: ``clamp((1 + 2m) sigmoid(h) - m, 0, 1)`` with m = ``SPARSE_MARGIN``: smooth
    like the sigmoid in between, exactly 0 (or 1) beyond it; ``"relu"``: unbounded above;
    ``"none"``: the identity."""
    if full_precision:
        h = at_least_float32(h)
    if kind == "sigmoid":
        return torch.sigmoid(h)
    if kind == "clamp":
        return h.clamp(0, 1)
    if kind == "sparse_sigmoid":
        return ((1 + 2 * SPARSE_MARGIN) * torch.sigmoid(h) - SPARSE_MARGIN).clamp(0, 1)
    if kind == "relu":
        return F.relu(h)
    return h


class ConditionalMLP(nn.Module):
    """``fc_out(dropout(lrelu(W [u; e] + b)))``: the shared body of G, D and E.

    Args:
        in_dim: dim of the visual / noise input u; cond_dim: dim of the embedding e.
        hidden: hidden units; out_dim: output units; dropout: after the hidden activation.
        split_first_layer: store the first layer as ``fc_in`` (u, no bias) + ``fc_cond`` (e) instead
            of one ``fc1`` over the concatenation (one GEMM, one fewer (B, hidden) pass).
    """

    def __init__(self, in_dim: int, cond_dim: int, hidden: int, out_dim: int, dropout: float = 0.0,
                 split_first_layer: bool = False):
        super().__init__()
        if split_first_layer:
            self.fc_in = AmpLinear(in_dim, hidden, bias=False)
            self.fc_cond = AmpLinear(cond_dim, hidden)
        else:
            self.fc1 = AmpLinear(in_dim + cond_dim, hidden)
        self.fc_out = AmpLinear(hidden, out_dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        init_weights(self)

    def first_layer(self, u: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """``W [u; e] + b``: (B, in_dim), (B, cond_dim) -> (B, hidden) before the activation."""
        if hasattr(self, "fc1"):
            return self.fc1(torch.cat([u, e.to(u.dtype)], -1))
        return self.fc_in(u) + self.fc_cond(e)

    def forward(self, u: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """u: (B, in_dim), e: (B, cond_dim) -> (B, out_dim)."""
        h = F.leaky_relu(self.first_layer(u, e), 0.2, inplace=True)  # in place on a fresh tensor
        return self.fc_out(self.dropout(h))


class ConditionalGenerator(ConditionalMLP):
    """G(z, e): noise (B, nz) and embedding (B, a) -> pre-activation feature (B, d)."""

    def forward_pairs(self, z: torch.Tensor, class_emb: torch.Tensor, pair_set: torch.Tensor,
                      pair_class: torch.Tensor) -> torch.Tensor:
        """G(z[pair_set[p]], class_emb[pair_class[p]]) for every pair p in one call.

        The narrow inputs (nz + a columns) are gathered per pair and go through ONE first-layer GEMM.
        Computing ``W_z z`` once per set and ``W_e e`` once per distinct class, then gathering and
        adding hidden-width rows, saves ~4% of the FLOPs but costs extra memory passes over a
        (P, hidden) tensor: slower on CPUs (measured).

        The pair count P changes with every batch; the rows are padded (copies of pair 0, dropped
        from the output) to a multiple of ``PAIR_ROW_MULTIPLE`` so that the GEMM shapes repeat: on
        the CPU, oneDNN builds (JIT-compiles) a kernel for every new shape, which cost 30-45 ms per
        GEMM for a (P, 4096) x (4096, 4096) product on a 2-core Xeon, more than the product itself.

        Args:
            z: (B, nz) noise, one per set; class_emb: (C, a) class embeddings.
            pair_set: (P,) set index of each pair; pair_class: (P,) row of ``class_emb``.
        Returns:
            (P, d) pre-activation features.
        """
        p = len(pair_set)
        pad = -p % PAIR_ROW_MULTIPLE
        if pad:
            pair_set = torch.cat([pair_set, pair_set[:1].expand(pad)])
            pair_class = torch.cat([pair_class, pair_class[:1].expand(pad)])
        out = self(z[pair_set], class_emb[pair_class].to(z.dtype))
        return out[:p] if pad else out


class Critic(ConditionalMLP):
    """WGAN critic D(x, e_mu) = w_out . lrelu(W_in x + W_e e_mu + b) + b_out: (N, d), (N, a) -> (N,) scores."""

    def __init__(self, feature_dim: int, emb_dim: int, hidden: int):
        super().__init__(feature_dim, emb_dim, hidden, 1, split_first_layer=True)

    def forward(self, x: torch.Tensor, e: torch.Tensor, grad_rows: int = 0):
        """Scores (N,); with ``grad_rows = k > 0`` also ``grad_x D`` of the last k rows, (k, d).

        The input gradient is written in closed form, ``grad_x D = W_in^T (lrelu'(h) * w_out)``, exact
        for this two-layer critic, so the gradient penalty needs no ``autograd.grad`` double backward:
        autograd differentiates this expression w.r.t. the weights like any other (lrelu' is
        piecewise constant). It is computed for the k rows that need it only.
        """
        h = self.first_layer(x, e)
        scores = self.fc_out(F.leaky_relu(h, 0.2)).squeeze(-1)
        if not grad_rows:
            return scores
        h_k = h[-grad_rows:].detach()
        slope = torch.where(h_k > 0, torch.ones_like(h_k), torch.full_like(h_k, 0.2))  # lrelu'(h); 0.2 at h = 0
        return scores, self.fc_in.weight_matmul(slope * self.fc_out.weight[0])


class Encoder(ConditionalMLP):
    """VAE encoder E(x, e_mu) -> (mu, log_var), each (B, nz)."""

    def __init__(self, feature_dim: int, emb_dim: int, hidden: int, noise_dim: int):
        super().__init__(feature_dim, emb_dim, hidden, 2 * noise_dim)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = super().forward(x, e).chunk(2, dim=-1)
        return mu, log_var
