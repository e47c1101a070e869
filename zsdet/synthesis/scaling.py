"""Feature scaling between the data's units and the generator's output range.

The official Generative_MLZSL code fits scikit-learn's ``MinMaxScaler`` on the training features
and puts sigmoids on the generator outputs, so real and synthesized features both live in
[0, 1] and f-VAEGAN's reconstruction loss can be a binary cross-entropy. :class:`FeatureScaler`
does the same per dimension (``"minmax"``), fitted in one streaming pass, or nothing
(``"none"``). It is saved in the generator checkpoints, and :meth:`SynthesisTrainer.synthesize`
returns features in the data's units (``inverse``) so they mix with real features directly.
"""
from typing import Dict

import torch

__all__ = ["FeatureScaler"]

SCALINGS = ("minmax", "none")


class FeatureScaler:
    """Per-dimension affine map ``t(x) = (x - low) / span``; identity for ``kind="none"``.

    A dimension constant on the training data gets ``span = 1`` (it maps to 0).
    """

    def __init__(self, kind: str = "minmax"):
        if kind not in SCALINGS:
            raise ValueError(f"SYNTHESIS.FEATURE_SCALING must be one of {SCALINGS}, got {kind!r}")
        self.kind = kind
        self.low = None  # (d,) float32
        self.span = None  # (d,) float32
        self._high = None

    @property
    def fitted(self) -> bool:
        return self.kind == "none" or self.low is not None

    def partial_fit(self, x: torch.Tensor) -> None:
        """Update the running minimum / maximum with a batch ``x`` (B, d)."""
        if self.kind == "none":
            return
        lo, hi = x.min(0).values.float(), x.max(0).values.float()
        if self.low is None:
            self.low, self._high = lo, hi
        else:
            self.low, self._high = torch.minimum(self.low, lo), torch.maximum(self._high, hi)
        span = self._high - self.low
        self.span = torch.where(span > 0, span, torch.ones_like(span))

    def _check(self, x: torch.Tensor) -> None:
        if not self.fitted:
            raise RuntimeError("FeatureScaler used before fitting")
        if self.kind != "none" and x.shape[-1] != len(self.low):
            raise ValueError(f"feature dim {x.shape[-1]} != scaler's {len(self.low)}")

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Data units -> generator units, (..., d)."""
        self._check(x)
        if self.kind == "none":
            return x
        return (x - self.low.to(x.device)) / self.span.to(x.device)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Generator units -> data units, (..., d)."""
        self._check(x)
        if self.kind == "none":
            return x
        return x * self.span.to(x.device) + self.low.to(x.device)

    def to(self, device) -> "FeatureScaler":
        """Keep the statistics on ``device`` (where the features to transform live); returns self."""
        if self.low is not None:
            self.low, self.span, self._high = (t.to(device) for t in (self.low, self.span, self._high))
        return self

    def state_dict(self) -> Dict:
        cpu = (lambda t: None if t is None else t.cpu())
        return {"kind": self.kind, "low": cpu(self.low), "span": cpu(self.span)}

    def load_state_dict(self, state: Dict) -> None:
        if state["kind"] != self.kind:
            raise ValueError(f"saved feature scaling {state['kind']!r} != configured {self.kind!r}")
        self.low, self.span = state["low"], state["span"]
        self._high = None if self.low is None else self.low + self.span
