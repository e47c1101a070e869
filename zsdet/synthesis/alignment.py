"""Per-dimension quantile alignment of synthesized features to real ones, fitted on seen classes.

A generator's outputs can differ from real features in every dimension's distribution (offsets,
scale, share of exact zeros) in the same way for all classes; a classifier trained on synthesized
unseen features and real seen ones then learns "synthesized" as a cue of the unseen classes, and real
unseen RoIs, which lack it, go to background or to a seen class. :class:`QuantileAlignment` learns,
on label sets with real features (seen classes), one monotone map per dimension that sends the
distribution of the synthesized values to that of the real values (quantile matching), and applies
it to features synthesized for any class. Class-independent and monotone: it keeps the order of the
values of a dimension, so what tells classes apart is kept; it corrects only what all classes share.

A value ``v`` of dimension ``j`` maps to ``Q_real_j(F_synth_j(v))``, with ``F`` the empirical CDF
(mid-rank on ties, e.g. the exact zeros of clamped outputs) and ``Q`` the quantile function, both
linear between ``LEVELS`` stored quantiles. Outside the synthesized range, ends map to ends.

:class:`ZeroShareAlignment` corrects the share of exact zeros only: per dimension, the synthesized
values at or below the quantile at the real features' zero share become exactly 0 and every other
value is kept, so the synthesized features have the real share of zeros (post-ReLU box-head
features are about 60 % zeros; sigmoid outputs never are) and nothing else of them moves.
"""
import torch

__all__ = ["QuantileAlignment", "ZeroShareAlignment", "ALIGNMENT_CLASSES", "LEVELS"]

LEVELS = 513  # stored quantiles per dimension and set: levels 0, 1/512, ..., 1
CHUNK = 8192  # rows mapped at once: bounds the (d, chunk) search


def _quantiles(x: torch.Tensor, levels: int) -> torch.Tensor:
    """(d, levels) quantiles of each column of ``x`` (n, d), linear interpolation between order statistics."""
    s = x.double().sort(0).values.T  # (d, n)
    pos = torch.linspace(0, len(x) - 1, levels, dtype=torch.float64)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=len(x) - 1)
    w = pos - lo
    return s[:, lo] * (1 - w) + s[:, hi] * w


def _interpolate(grid: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """``grid`` (d, L) read at fractional positions ``at`` (d, m) in [0, L - 1], linearly."""
    lo = at.floor().long().clamp(0, grid.shape[1] - 1)
    hi = (lo + 1).clamp(max=grid.shape[1] - 1)
    w = at - lo
    return grid.gather(1, lo) * (1 - w) + grid.gather(1, hi) * w


def _check_fit_inputs(synth_x: torch.Tensor, real_x: torch.Tensor) -> None:
    """(n, d) synthesized and (m, d) real features, n, m >= 2, else a ValueError saying which."""
    if synth_x.ndim != 2 or real_x.ndim != 2 or synth_x.shape[1] != real_x.shape[1]:
        raise ValueError(f"alignment needs (n, d) synthesized and (m, d) real features, got "
                         f"{tuple(synth_x.shape)} and {tuple(real_x.shape)}")
    if min(len(synth_x), len(real_x)) < 2:
        raise ValueError(f"alignment needs at least 2 synthesized and 2 real rows, got {len(synth_x)} / "
                         f"{len(real_x)}")


class QuantileAlignment:
    """A per-dimension monotone map from synthesized to real feature values (module docstring).

    Args:
        synth_quantiles, real_quantiles: (d, LEVELS) float64 quantiles of synthesized / real values.
    """

    def __init__(self, synth_quantiles: torch.Tensor, real_quantiles: torch.Tensor):
        if synth_quantiles.shape != real_quantiles.shape or synth_quantiles.ndim != 2:
            raise ValueError(f"quantile grids must have one shape (d, L), got {tuple(synth_quantiles.shape)} and "
                             f"{tuple(real_quantiles.shape)}")
        self.synth_quantiles = synth_quantiles.double()
        self.real_quantiles = real_quantiles.double()

    @classmethod
    def fit(cls, synth_x: torch.Tensor, real_x: torch.Tensor, levels: int = LEVELS) -> "QuantileAlignment":
        """Fit on synthesized features ``synth_x`` (n, d) and real ones ``real_x`` (m, d) of the same
        label sets (n, m >= 2; same units)."""
        _check_fit_inputs(synth_x, real_x)
        return cls(_quantiles(synth_x, levels), _quantiles(real_x, levels))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The aligned features, (n, d) float32 like ``x``."""
        if x.ndim != 2 or x.shape[1] != self.synth_quantiles.shape[0]:
            raise ValueError(f"alignment fitted on {self.synth_quantiles.shape[0]}-d features, got {tuple(x.shape)}")
        grid, last = self.synth_quantiles, self.synth_quantiles.shape[1] - 1
        out = torch.empty_like(x)
        for start in range(0, len(x), CHUNK):  # chunks of rows, every dimension at once
            v = x[start:start + CHUNK].T.double().contiguous()  # (d, m)
            left = torch.searchsorted(grid, v, right=False)  # grid values < v
            right = torch.searchsorted(grid, v, right=True)  # grid values <= v
            lo = (left - 1).clamp(0, last)
            hi = left.clamp(0, last)
            g_lo, g_hi = grid.gather(1, lo), grid.gather(1, hi)
            between = lo.double() + ((v - g_lo) / (g_hi - g_lo).clamp(min=1e-12)).clamp(0, 1)
            tied = (left + right - 1).double() / 2  # mid-rank of the grid values equal to v
            position = torch.where(right > left, tied, between).clamp(0, last)
            out[start:start + CHUNK] = _interpolate(self.real_quantiles, position).T.to(x.dtype)
        return out


class ZeroShareAlignment:
    """Exact zeros in the real share, per dimension (module docstring).

    Args:
        thresholds: (d,) float64: synthesized values ``<=`` these become 0 (``-inf``: a dimension
            whose real values are never 0).
    """

    def __init__(self, thresholds: torch.Tensor):
        if thresholds.ndim != 1:
            raise ValueError(f"thresholds must be (d,), got {tuple(thresholds.shape)}")
        self.thresholds = thresholds.double()

    @classmethod
    def fit(cls, synth_x: torch.Tensor, real_x: torch.Tensor, levels: int = LEVELS) -> "ZeroShareAlignment":
        """Fit on synthesized features ``synth_x`` (n, d) and real ones ``real_x`` (m, d) of the same
        label sets (n, m >= 2): each dimension's threshold is the synthesized quantile at the share of
        real values ``<= 0``."""
        _check_fit_inputs(synth_x, real_x)
        zero_share = (real_x <= 0).double().mean(0)  # (d,)
        grid = _quantiles(synth_x, levels)
        thresholds = _interpolate(grid, zero_share[:, None] * (levels - 1))[:, 0]
        return cls(torch.where(zero_share > 0, thresholds, torch.full_like(thresholds, float("-inf"))))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The features with their values at or below each dimension's threshold set to 0, (n, d) like ``x``."""
        if x.ndim != 2 or x.shape[1] != len(self.thresholds):
            raise ValueError(f"alignment fitted on {len(self.thresholds)}-d features, got {tuple(x.shape)}")
        return x.masked_fill(x <= self.thresholds.to(x.dtype), 0.0)  # no float64 copy of x


ALIGNMENT_CLASSES = {"quantile": QuantileAlignment, "zeros": ZeroShareAlignment}  # ZSD.CLASSIFIER.ALIGN_SYNTHESIZED
