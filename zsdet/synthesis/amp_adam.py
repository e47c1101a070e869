"""``AmpAdam``: Adam that updates :class:`~zsdet.synthesis.amp_linear.AmpLinear` weights in one pass.

With bf16 autocast a weight's step, done with stock ops, is three passes over weight-sized memory
(cast the bf16 gradient to float32, fused Adam, cast the new weight into the layer's bf16 copy):
memory bandwidth, not arithmetic, bounds it on a CPU.

``AmpAdam`` is ``torch.optim.Adam`` (same hyper-parameters, state and ``state_dict``) except for
parameters whose ``.grad`` has a lower precision than the parameter: the weights of ``AmpLinear``
layers in ``grad_mode="low_precision"`` (the constructor puts the module's layers in that mode).
For those, one function reads the bf16 gradient, updates the float32 weight and moments exactly as
``torch.optim.Adam`` (no amsgrad) and writes the layer's bf16 weight copy, compiled with
``torch.compile`` into one loop; where compilation is unavailable it runs eagerly (same result up
to rounding) after a logged warning. Every other parameter goes through stock fused Adam.
"""
import logging
from typing import Optional

import torch
from torch import nn

from .amp_linear import AmpLinear, set_grad_mode

__all__ = ["AmpAdam", "adam_update_low_precision", "compiled_adam_update"]

logger = logging.getLogger(__name__)


def adam_update_low_precision(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor,
                              exp_avg_sq: torch.Tensor, step_size: torch.Tensor, bias_correction2_sqrt: torch.Tensor,
                              low_precision: torch.Tensor, beta1: float, beta2: float, eps: float,
                              weight_decay: float) -> None:
    """One Adam step in place (``torch.optim.Adam`` semantics, L2 ``weight_decay``, no amsgrad).

    Args:
        param, exp_avg, exp_avg_sq: (N,) float32, updated in place.
        grad: (N,) gradient of any float dtype (read in the dtype of param).
        step_size: 0-d ``lr / (1 - beta1^t)``; bias_correction2_sqrt: 0-d ``sqrt(1 - beta2^t)`` (tensors, so
            the compiled loop does not depend on the step and nothing syncs with the host).
        low_precision: (N,) receives the updated ``param`` cast to its dtype.
    """
    g = grad.to(param.dtype)
    if weight_decay:
        g = g + weight_decay * param
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    param.sub_(exp_avg / (exp_avg_sq.sqrt() / bias_correction2_sqrt + eps) * step_size)
    low_precision.copy_(param)


_compiled_update = None  # adam_update_low_precision compiled (dynamic sizes), or itself after a failure


def compiled_adam_update(*args, **kwargs) -> None:
    """``adam_update_low_precision`` through ``torch.compile`` (compiled once per process); the eager
    function after a logged warning when compilation fails."""
    global _compiled_update
    if _compiled_update is None:
        _compiled_update = torch.compile(adam_update_low_precision, dynamic=True, fullgraph=True)
    if _compiled_update is not adam_update_low_precision:
        try:
            return _compiled_update(*args, **kwargs)
        except Exception as e:  # no C++ compiler / triton, unsupported platform, ...
            logger.warning("AmpAdam: torch.compile of the one-pass update failed (%s: %s); using the eager "
                           "update (same result up to rounding, slower)", type(e).__name__,
                           str(e).splitlines()[0][:200] if str(e) else "")
            _compiled_update = adam_update_low_precision
    return adam_update_low_precision(*args, **kwargs)


class AmpAdam(torch.optim.Adam):
    """``torch.optim.Adam`` over ``module``'s parameters with the one-pass update of its
    :class:`AmpLinear` weights (module docstring).

    Args:
        module: the trained module; its ``AmpLinear`` layers are set to ``grad_mode="low_precision"``.
        compile: compile the one-pass update (False: always eager).
        **kwargs: ``torch.optim.Adam`` arguments (``amsgrad`` / ``maximize`` are not supported).
    """

    def __init__(self, module: nn.Module, compile: bool = True, **kwargs):
        for key in ("amsgrad", "maximize"):
            if kwargs.get(key):
                raise ValueError(f"AmpAdam does not support {key}=True")
        super().__init__(module.parameters(), **kwargs)
        self._layers = {m.weight: m for m in module.modules() if isinstance(m, AmpLinear)}
        set_grad_mode(module, "low_precision")
        self._update = compiled_adam_update if compile else adam_update_low_precision

    @torch.no_grad()
    def step(self, closure=None) -> Optional[torch.Tensor]:
        low = [(p, group) for group in self.param_groups for p in group["params"]
               if p.grad is not None and p.grad.dtype != p.dtype]
        grads = [p.grad for p, _ in low]
        for p, _ in low:  # hidden from the stock step, which needs gradients of the parameter's dtype
            p.grad = None
        try:
            loss = super().step(closure)
        finally:
            for (p, _), g in zip(low, grads):
                p.grad = g
        for (p, group), g in zip(low, grads):
            self._step_low_precision(p, g, group)
        return loss

    def _step_low_precision(self, p: torch.Tensor, grad: torch.Tensor, group) -> None:
        layer = self._layers.get(p)
        if layer is None:
            raise TypeError(f"AmpAdam: a parameter of shape {tuple(p.shape)} has a {grad.dtype} gradient but is "
                            "not the weight of an AmpLinear layer of the module")
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        beta1, beta2 = (float(b) for b in group["betas"])
        step = state["step"]
        step.add_(1)
        step_size = float(group["lr"]) / (1 - beta1 ** step)
        bias_correction2_sqrt = (1 - beta2 ** step).sqrt()
        low_precision = layer.low_precision_weight(grad.dtype, refresh=False)
        self._update(p.detach().view(-1), grad.view(-1), state["exp_avg"].view(-1), state["exp_avg_sq"].view(-1),
                     step_size, bias_correction2_sqrt, low_precision.view(-1), beta1=beta1, beta2=beta2,
                     eps=float(group["eps"]), weight_decay=float(group["weight_decay"]))
        layer.mark_low_precision_weight_current()
