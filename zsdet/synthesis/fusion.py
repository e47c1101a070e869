"""Multi-label feature generators: ALF (eq. 1), FLF (eq. 2) and CLF (eqs. 3-5) of the paper.

All three consume a :class:`SetIndex` (flattened label sets, built on the CPU by
:func:`index_label_sets`) and noise ``z (B, nz)``, and return features ``(B, d)`` float32 in
generator units (after the output activation).

* ALF: ``x_a = act(G_a(z, e_mu))`` with ``e_mu`` the mean embedding of the set.
* FLF: ``x_j = act(G_f(z, e(y_j)))`` for every positive j with the *same* z, ``x_f = mean_j x_j``.
  One generator call covers all (set, label) pairs of the batch; nothing loops over samples or
  label slots. Padded slots are never evaluated.
* CLF: ``X = [x_f; x_a]`` (B, 2, d) -> :class:`CrossLevelFusion` -> ``x_c = act(...)``.
"""
import math
from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from .amp_linear import AmpLinear
from .label_sets import LabelSets
from .networks import OUTPUT_ACTIVATIONS, ConditionalGenerator, at_least_float32, init_weights, output_activation

__all__ = ["FUSIONS", "CLF_INPUTS", "CLF_INITS", "BRANCH_NOISES", "SetIndex", "index_label_sets",
           "CrossLevelFusion", "MultiLabelGenerator"]

FUSIONS = ("alf", "flf", "clf")
CLF_INPUTS = ("activated", "pre_activation")  # what the CLF block fuses (SYNTHESIS.CLF_INPUT)
CLF_INITS = ("random", "identity")  # how the CLF block starts (SYNTHESIS.CLF_INIT)
BRANCH_NOISES = ("shared", "separate")  # noise of G_a and G_f in CLF (SYNTHESIS.CLF_BRANCH_NOISE)


@dataclass
class SetIndex:
    """Index tensors of B label sets with P (set, class) pairs.

    Attributes:
        idx, mask: (B, N_max) the padded sets (for mean embeddings).
        sizes: (B,) float32 set sizes n.
        pair_set: (P,) set of each pair; pair_class: (P,) class id of each pair.
    """

    idx: torch.Tensor
    mask: torch.Tensor
    sizes: torch.Tensor
    pair_set: torch.Tensor
    pair_class: torch.Tensor

    def __len__(self) -> int:
        return len(self.idx)

    def to(self, device, non_blocking: bool = False) -> "SetIndex":
        return SetIndex(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)})

    def pin_memory(self) -> "SetIndex":
        return SetIndex(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})


def index_label_sets(sets: LabelSets, num_classes: int) -> SetIndex:
    """Flatten CPU label sets for the generators.

    Raises:
        KeyError: a set uses a class id without a row in the (num_classes, a) embedding matrix.
    """
    if sets.device.type != "cpu":
        raise ValueError("index_label_sets expects CPU label sets (index bookkeeping would sync the device)")
    top = sets.max_class()
    if top >= num_classes:
        raise KeyError(f"class id {top} is used in a label set but the class-embedding matrix has only "
                       f"{num_classes} rows")
    pair_set, pair_class = sets.pairs()
    return SetIndex(idx=sets.idx, mask=sets.mask, sizes=sets.sizes().float(), pair_set=pair_set,
                    pair_class=pair_class)


def mean_over_sets(pair_values: torch.Tensor, sets: SetIndex) -> torch.Tensor:
    """(P, d) per-pair values -> (B, d) per-set means (one index_add over the pairs)."""
    sums = pair_values.new_zeros(len(sets), pair_values.shape[1]).index_add_(0, sets.pair_set, pair_values)
    return sums / sets.sizes[:, None].to(pair_values.dtype)


class CrossLevelFusion(nn.Module):
    """The CLF feature-fusion block, eqs. 3-5 as written in the paper.

    ``X = [x_f; x_a]`` (2, d) per sample; for each head h (d' = d / H):
    ``q_h, k_h, v_h = X W^Q_h, X W^K_h, X W^V_h``, ``r_h = softmax(q_h k_h^T / sqrt(d'))`` over the
    two keys (a 2x2 matrix), ``alpha_h = r_h v_h``; ``o = concat_h(alpha_h) W^O`` (eq. 3);
    ``o~ = f(X + o) + (X + o)`` with ``f`` = FC -> LeakyReLU(0.2) -> FC (eq. 4); the output is the
    mean of the two rows of ``o~`` (eq. 5), before the generator's output activation.
    Projections W^Q, W^K, W^V, W^O have no bias (the paper writes them as plain matrices).

    Two exact rewrites save work: the H per-head projections are one (d, 3d) matrix, and since
    f's second FC layer is linear, ``mean_rows(f(s)) = fc2(mean_rows(lrelu(fc1(s))))`` so that
    layer runs once per sample instead of twice.

    Difference from the official implementation (Generative_MLZSL ``model.py``): it views the
    stacked (2, d) projections straight as (H, 2, d/H), so head h sees two consecutive d/H-chunks
    of *one* row of the flattened (2d,) vector (heads 0..H/2-1 attend between chunks of x_f, the
    others between chunks of x_a) instead of x_f and x_a themselves; it also sets scores that are
    exactly 0 to -1e9 before the softmax, applies dropout 0.1 to the attention weights and to
    ``o``, and adds a sigmoid after the mean. We follow the paper; dropout is configurable
    (``SYNTHESIS.CLF_DROPOUT``) and the output activation is the generator's.

    ``identity_init``: W^O and f's second FC layer start at zero, so the block starts as the mean of
    its two inputs (a residual block that learns what to add to it) instead of a random mixing.

    Args:
        dim: feature dim d (divisible by heads); heads: H; ff_hidden: hidden units of f.
        dropout: on the attention weights and on o; identity_init: see above.
    """

    def __init__(self, dim: int, heads: int, ff_hidden: int, dropout: float = 0.0, identity_init: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"feature dim {dim} is not divisible by SYNTHESIS.CLF_HEADS={heads}")
        self.heads = heads
        self.qkv = AmpLinear(dim, 3 * dim, bias=False)
        self.out = AmpLinear(dim, dim, bias=False)
        self.ff1 = AmpLinear(dim, ff_hidden)
        self.ff2 = AmpLinear(ff_hidden, dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        init_weights(self)
        if identity_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.ff2.weight)

    def forward(self, x_f: torch.Tensor, x_a: torch.Tensor) -> torch.Tensor:
        """x_f, x_a: (B, d) -> fused (B, d) before the output activation."""
        x = torch.stack([x_f, x_a], 1)  # (B, 2, d)
        b, _, d = x.shape
        q, k, v = self.qkv(x).view(b, 2, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, 2, d')
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)  # (B, H, 2, 2)
        r = self.dropout(torch.softmax(at_least_float32(scores), dim=-1)).to(v.dtype)
        alpha = (r @ v).transpose(1, 2).reshape(b, 2, d)  # concat over heads
        s = x + self.dropout(self.out(alpha))  # X + o
        h = F.leaky_relu(self.ff1(s), 0.2, inplace=True)
        h = (h[:, 0] + h[:, 1]) * 0.5  # the row mean of eq. 5, moved before the linear fc2
        return self.ff2(h) + s.mean(1)


class MultiLabelGenerator(nn.Module):
    """G(z, label sets) for one fusion method; holds the class embeddings as a buffer.

    Args:
        fusion: "alf" | "flf" | "clf".
        class_embeddings: (C, a) float tensor (rows indexed by class id).
        feature_dim: d; noise_dim: nz; hidden: hidden units of G_a / G_f.
        heads, ff_hidden, dropout: CLF block settings (ignored otherwise).
        out_act: one of ``OUTPUT_ACTIVATIONS``, applied to the generator's output.
        clf_input: ``"activated"`` (paper, official code): the block fuses x_f and x_a after the
            output activation and the activation is applied again to its output;
            ``"pre_activation"``: it fuses G_f's (mean over the set's labels) and G_a's outputs
            before any activation, and the activation is applied once, to its output.
        clf_init: ``"random"`` (official) or ``"identity"`` (:class:`CrossLevelFusion`).
        branch_noise: ``"shared"`` (paper: one z for G_a and G_f) or ``"separate"``: z (B, 2 nz)
            is split into one noise per branch.
    """

    def __init__(self, fusion: str, class_embeddings: torch.Tensor, feature_dim: int, noise_dim: int,
                 hidden: int, heads: int = 8, ff_hidden: int = 8192, dropout: float = 0.0,
                 out_act: str = "sigmoid", *, clf_input: str = "activated", clf_init: str = "random",
                 branch_noise: str = "shared"):
        super().__init__()
        for key, value, choices in (("FUSION", fusion, FUSIONS), ("OUTPUT_ACTIVATION", out_act, OUTPUT_ACTIVATIONS),
                                    ("CLF_INPUT", clf_input, CLF_INPUTS), ("CLF_INIT", clf_init, CLF_INITS),
                                    ("CLF_BRANCH_NOISE", branch_noise, BRANCH_NOISES)):
            if value not in choices:
                raise ValueError(f"SYNTHESIS.{key} must be one of {choices}, got {value!r}")
        self.fusion, self.out_act, self.noise_dim = fusion, out_act, noise_dim
        self.clf_input, self.branch_noise = clf_input, branch_noise
        self.register_buffer("class_embeddings", torch.as_tensor(class_embeddings, dtype=torch.float32).clone())
        emb_dim = self.class_embeddings.shape[1]
        self.g_a = ConditionalGenerator(noise_dim, emb_dim, hidden, feature_dim) if fusion != "flf" else None
        self.g_f = ConditionalGenerator(noise_dim, emb_dim, hidden, feature_dim) if fusion != "alf" else None
        self.fuse = (CrossLevelFusion(feature_dim, heads, ff_hidden, dropout, clf_init == "identity")
                     if fusion == "clf" else None)

    @property
    def input_noise_dim(self) -> int:
        """Columns of the noise ``z`` that :meth:`forward` takes (2 nz for CLF with separate noise)."""
        return self.noise_dim * (2 if self.fusion == "clf" and self.branch_noise == "separate" else 1)

    def mean_embedding(self, sets: SetIndex) -> torch.Tensor:
        """e_mu (B, a): mean class embedding of each set (eq. 1)."""
        emb = self.class_embeddings[sets.idx] * sets.mask[..., None]
        return emb.sum(1) / sets.sizes[:, None]

    def alf(self, z: torch.Tensor, e_mu: torch.Tensor, final: bool = True) -> torch.Tensor:
        """x_a (B, d), eq. 1; ``final=False``: an input of the CLF block, kept in the compute dtype."""
        return output_activation(self.g_a(z, e_mu), self.out_act, full_precision=final)

    def flf(self, z: torch.Tensor, sets: SetIndex, final: bool = True) -> torch.Tensor:
        """x_f (B, d), eq. 2: one G_f call over all P pairs, same z for all labels of a set."""
        pairs = self.g_f.forward_pairs(z, self.class_embeddings, sets.pair_set, sets.pair_class)
        return mean_over_sets(output_activation(pairs, self.out_act, full_precision=final), sets)

    def forward(self, z: torch.Tensor, sets: SetIndex, e_mu: torch.Tensor = None) -> torch.Tensor:
        """z: (B, input_noise_dim) noise; sets: B label sets on z's device; e_mu: optional precomputed (B, a).

        Returns:
            (B, d) float32 synthesized features in generator units.
        """
        if self.fusion == "flf":
            return self.flf(z, sets)
        e_mu = self.mean_embedding(sets) if e_mu is None else e_mu
        if self.fusion == "alf":
            return self.alf(z, e_mu)
        z_f, z_a = z.chunk(2, dim=1) if self.branch_noise == "separate" else (z, z)
        if self.clf_input == "pre_activation":
            pairs = self.g_f.forward_pairs(z_f, self.class_embeddings, sets.pair_set, sets.pair_class)
            return output_activation(self.fuse(mean_over_sets(pairs, sets), self.g_a(z_a, e_mu)), self.out_act)
        return output_activation(self.fuse(self.flf(z_f, sets, final=False), self.alf(z_a, e_mu, final=False)),
                                 self.out_act)
