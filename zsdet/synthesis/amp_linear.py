"""``AmpLinear``: a linear layer whose autocast path reuses persistent low-precision buffers.

Under ``torch.autocast`` a plain ``nn.Linear`` casts its float32 weight to bfloat16 at every call,
its backward writes the bfloat16 weight gradient into a fresh tensor and casts it into another fresh
float32 tensor: three weight-sized allocations per layer and step. On the CPU, glibc serves every
block above 32 MiB with a fresh ``mmap`` that the kernel must page-fault and zero, which at large
generator sizes costs more than the arithmetic.

:class:`AmpLinear` computes what autocast computes (bf16 operands, bf16 GEMM outputs, the weight
gradient rounded to bf16) but keeps persistent buffers per layer:

* ``weight`` stays the float32 master the optimizer updates;
* a low-precision copy of it, refreshed in place only when the weight's version counter changed
  (an optimizer step, ``load_state_dict``, any in-place edit), so an optimizer step costs one cast
  and several calls per step cost none;
* the weight gradient: the GEMM writes into a persistent low-precision buffer, which becomes
  ``weight.grad`` itself or is copied / added into a persistent float32 ``weight.grad``, as
  ``AmpLinear.grad_mode`` says. The weight gradient then does not travel through autograd:
  gradient hooks on the weight do not fire, which is why ``grad_mode="autograd"`` (fresh float32
  gradients through autograd) exists for modules wrapped in ``DistributedDataParallel`` (DDP
  reduces gradients from those hooks), and a reference kept to an old ``weight.grad`` is
  overwritten by the next backward after ``zero_grad()``.

Outside autocast (or with a float64 input) the layer is ``nn.Linear``. The bias has autocast's
precision (cast per call, gradient through autograd: it is small).
"""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["AmpLinear", "GRAD_MODES", "set_grad_mode"]

_ADD_CHUNK = 1 << 18  # elements per piece when adding a bf16 gradient into a float32 one (1 MiB temporaries)


def _autocast_dtype(x: torch.Tensor) -> Optional[torch.dtype]:
    """The autocast dtype active for ``x``'s device, or None (no autocast / float64 input)."""
    kind = x.device.type
    if x.dtype == torch.float64 or not torch.is_autocast_enabled(kind):
        return None
    return torch.get_autocast_dtype(kind)


class _CastCachedMatmul(torch.autograd.Function):
    """``x @ W^T + b`` (``transpose=True``: the linear layer) or ``x @ W`` with W the layer's cached
    low-precision weight; x is 2-D (a view made inside a Function could not be modified in place);
    the weight gradient is accumulated by the layer (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, layer, dtype, transpose):
        w = layer.low_precision_weight(dtype)
        x_lp = x.to(dtype)
        ctx.layer, ctx.transpose, ctx.x_dtype = layer, transpose, x.dtype
        ctx.save_for_backward(x_lp, w)
        if transpose:  # one fused GEMM + bias, as autocast's linear
            return F.linear(x_lp, w, None if bias is None else bias.to(dtype))
        return x_lp @ w

    @staticmethod
    def backward(ctx, grad):
        x_lp, w = ctx.saved_tensors
        grad = grad.to(w.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ (w if ctx.transpose else w.t())).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:  # the small (K, rows) left operand made contiguous: ~1.5x faster GEMM
            a, b = (grad, x_lp) if ctx.transpose else (x_lp, grad)
            grad_w = ctx.layer.weight_gradient(a.t().contiguous(), b)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(0).float()
        return grad_x, grad_w, grad_b, None, None, None


GRAD_MODES = ("float32", "low_precision", "autograd")


class AmpLinear(nn.Linear):
    """``nn.Linear`` with cached low-precision weights under autocast (module docstring).

    Same constructor, parameters and state dict as ``nn.Linear``. ``grad_mode`` says where the
    weight gradient of an autocast backward goes:

    * ``"float32"`` (default): accumulated into a persistent float32 ``weight.grad`` (any optimizer);
    * ``"low_precision"``: ``weight.grad`` IS the persistent bf16 buffer (the GEMM writes into it,
      later contributions are added by ``addmm_``): for :class:`~zsdet.synthesis.amp_adam.AmpAdam`,
      which reads it and refreshes the bf16 weight in the same pass;
    * ``"autograd"``: returned through autograd as a fresh float32 tensor (gradient hooks fire: DDP).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.grad_mode = "float32"
        self._lp_weight = self._lp_grad = self._grad = None
        self._lp_key = None

    def _weight_key(self, dtype: torch.dtype):
        w = self.weight
        return dtype, w.device, w.data_ptr(), w._version

    def low_precision_weight(self, dtype: torch.dtype, refresh: bool = True) -> torch.Tensor:
        """The weight cast to ``dtype``, from a persistent buffer refreshed when the weight changed
        (``refresh=False``: the buffer as is, e.g. for an optimizer that writes it)."""
        w = self.weight
        if self._lp_weight is None or self._lp_weight.dtype != dtype or self._lp_weight.device != w.device:
            self._lp_weight, self._lp_key = torch.empty_like(w, dtype=dtype, requires_grad=False), None
        if refresh and self._lp_key != self._weight_key(dtype):
            with torch.no_grad():
                self._lp_weight.copy_(w)
            self.mark_low_precision_weight_current()
        return self._lp_weight

    def mark_low_precision_weight_current(self) -> None:
        """Record that the low-precision buffer equals the weight as it is now."""
        self._lp_key = self._weight_key(self._lp_weight.dtype)

    def weight_gradient(self, a: torch.Tensor, b: torch.Tensor) -> Optional[torch.Tensor]:
        """Weight gradient ``a @ b`` (low precision, weight-shaped), delivered as ``grad_mode`` says;
        returns what autograd should receive for the weight (None unless ``"autograd"``)."""
        if self.grad_mode not in GRAD_MODES:
            raise ValueError(f"AmpLinear.grad_mode must be one of {GRAD_MODES}, got {self.grad_mode!r}")
        w = self.weight
        if self.grad_mode == "low_precision" and w.grad is not None and w.grad.dtype == a.dtype:
            w.grad.addmm_(a, b)  # a later contribution, e.g. the critic's weight used twice
            return None
        if self._lp_grad is None or self._lp_grad.dtype != a.dtype or self._lp_grad.device != a.device:
            self._lp_grad = torch.empty_like(w, dtype=a.dtype, requires_grad=False)
        torch.mm(a, b, out=self._lp_grad)
        if self.grad_mode == "autograd":
            return self._lp_grad.to(w.dtype)
        if w.grad is not None:  # chunked: a mixed-dtype add_ would first cast the whole bf16 tensor
            torch._foreach_add_(list(w.grad.view(-1).split(_ADD_CHUNK)), list(self._lp_grad.view(-1).split(_ADD_CHUNK)))
        elif self.grad_mode == "low_precision":
            w.grad_dtype = None  # allow a gradient dtype different from the weight's
            w.grad = self._lp_grad
        else:
            if self._grad is None or self._grad.device != w.device:
                self._grad = torch.empty_like(w, requires_grad=False)
            self._grad.copy_(self._lp_grad)
            w.grad = self._grad
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in_features) -> (..., out_features)."""
        dtype = _autocast_dtype(x)
        if dtype is None:
            return F.linear(x, self.weight, self.bias)
        y = _CastCachedMatmul.apply(x.reshape(-1, x.shape[-1]), self.weight, self.bias, self, dtype, True)
        return y.view(*x.shape[:-1], y.shape[-1])

    def weight_matmul(self, a: torch.Tensor) -> torch.Tensor:
        """``a @ W``: (..., out_features) -> (..., in_features) (e.g. an input gradient in closed form)."""
        dtype = _autocast_dtype(a)
        if dtype is None:
            return a @ self.weight
        y = _CastCachedMatmul.apply(a.reshape(-1, a.shape[-1]), self.weight, None, self, dtype, False)
        return y.view(*a.shape[:-1], y.shape[-1])


def set_grad_mode(module: nn.Module, mode: str) -> None:
    """Set ``grad_mode`` of every :class:`AmpLinear` in ``module``."""
    if mode not in GRAD_MODES:
        raise ValueError(f"AmpLinear.grad_mode must be one of {GRAD_MODES}, got {mode!r}")
    for m in module.modules():
        if isinstance(m, AmpLinear):
            m.grad_mode = mode
