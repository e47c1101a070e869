"""AmpLinear: autocast parity with nn.Linear, cached bf16 weights, persistent gradient buffers."""
import pytest
import torch
from torch import nn

from zsdet.synthesis.amp_linear import AmpLinear, set_grad_mode

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def assert_close_bf16(actual, expected):
    """Agreement up to bf16 rounding (8 significant bits) relative to the tensor's scale."""
    err = (actual.float() - expected.float()).abs().max()
    assert err <= 1e-2 * expected.float().abs().max(), f"max error {err} vs scale {expected.abs().max()}"


def pair(in_dim=48, out_dim=40, bias=True, seed=0):
    torch.manual_seed(seed)
    ref = nn.Linear(in_dim, out_dim, bias=bias)
    amp = AmpLinear(in_dim, out_dim, bias=bias)
    amp.load_state_dict(ref.state_dict())
    return ref, amp


def run(layer, x, autocast=True):
    with torch.autocast(**BF16, enabled=autocast):
        y = layer(x)
    (y.float().sin()).sum().backward()
    return y


@pytest.mark.parametrize("mode", ["float32", "low_precision", "autograd"])
def test_matches_nn_linear_under_bf16_autocast(mode):
    ref, amp = pair()
    amp.grad_mode = mode
    x_ref = torch.randn(5, 3, 48, requires_grad=True)
    x_amp = x_ref.detach().clone().requires_grad_(True)
    y_ref, y_amp = run(ref, x_ref), run(amp, x_amp)
    assert y_amp.dtype == y_ref.dtype == torch.bfloat16 and y_amp.shape == (5, 3, 40)
    torch.testing.assert_close(y_amp, y_ref, rtol=0, atol=0)
    assert_close_bf16(x_amp.grad, x_ref.grad)
    assert_close_bf16(amp.weight.grad.float(), ref.weight.grad)
    assert_close_bf16(amp.bias.grad, ref.bias.grad)
    expected_dtype = torch.bfloat16 if mode == "low_precision" else torch.float32
    assert amp.weight.grad.dtype == expected_dtype


def test_is_nn_linear_without_autocast():
    ref, amp = pair()
    x = torch.randn(7, 48)
    y_ref, y_amp = run(ref, x, autocast=False), run(amp, x, autocast=False)
    assert y_amp.dtype == torch.float32
    torch.testing.assert_close(y_amp, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(amp.weight.grad, ref.weight.grad, rtol=0, atol=0)


def test_weight_matmul_and_double_use_accumulate_like_autograd():
    """x W^T and a W in one graph (the critic's closed-form input gradient): both contributions add up."""
    torch.manual_seed(1)
    w = torch.randn(40, 48) * 0.1
    amp = AmpLinear(48, 40, bias=False)
    with torch.no_grad():
        amp.weight.copy_(w)
    ref_w = w.clone().requires_grad_(True)
    x, a = torch.randn(6, 48), torch.randn(4, 40)
    for mode in ("float32", "low_precision"):
        amp.grad_mode, amp.weight.grad, ref_w.grad = mode, None, None
        with torch.autocast(**BF16):
            loss = amp(x).float().pow(2).sum() + amp.weight_matmul(a).float().sin().sum()
            ref = (x @ ref_w.T).float().pow(2).sum() + (a @ ref_w).float().sin().sum()
        loss.backward()
        ref.backward()
        assert_close_bf16(amp.weight.grad.float(), ref_w.grad)


@pytest.mark.parametrize("mode", ["float32", "low_precision"])
def test_gradient_buffers_and_bf16_weight_are_reused(mode):
    """No weight-sized allocation per step: the same buffers come back after zero_grad()."""
    _, amp = pair()
    amp.grad_mode = mode
    opt = torch.optim.SGD(amp.parameters(), lr=0.1)
    ptrs = set()
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        run(amp, torch.randn(8, 48))
        ptrs.add((amp.weight.grad.data_ptr(), amp.low_precision_weight(torch.bfloat16).data_ptr()))
        if mode == "float32":
            opt.step()
    assert len(ptrs) == 1


def test_gradients_accumulate_without_zero_grad():
    for mode in ("float32", "low_precision"):
        _, amp = pair()
        amp.grad_mode = mode
        x = torch.randn(8, 48)
        run(amp, x)
        once = amp.weight.grad.float().clone()
        run(amp, x)
        assert_close_bf16(amp.weight.grad.float(), 2 * once)


def test_cached_weight_follows_in_place_updates():
    """Optimizer steps and load_state_dict bump the weight's version: the bf16 copy is refreshed."""
    ref, amp = pair()
    x = torch.randn(4, 48)
    for layer in (ref, amp):
        run(layer, x)  # also fills amp's bf16 copy with the old weight
        torch.optim.SGD(layer.parameters(), lr=0.5).step()
    with torch.autocast(**BF16):
        torch.testing.assert_close(amp(x), ref(x), rtol=0, atol=0)
    fresh = nn.Linear(48, 40)
    amp.load_state_dict(fresh.state_dict())
    with torch.autocast(**BF16):
        torch.testing.assert_close(amp(x), fresh(x), rtol=0, atol=0)


def test_autograd_mode_fires_gradient_hooks():
    _, amp = pair()
    set_grad_mode(amp, "autograd")
    seen = []
    amp.weight.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.dtype))
    run(amp, torch.randn(3, 48))
    assert seen == [torch.float32]


def test_bad_grad_mode_is_rejected():
    _, amp = pair()
    with pytest.raises(ValueError, match="grad_mode"):
        set_grad_mode(amp, "fp8")
    amp.grad_mode = "fp8"
    with pytest.raises(ValueError, match="grad_mode"):
        run(amp, torch.randn(2, 48))
