"""AmpAdam: torch.optim.Adam semantics for bf16-gradient AmpLinear weights, one pass, bf16 copy kept in sync."""
import copy

import pytest
import torch
from torch import nn

from zsdet.synthesis.amp_adam import AmpAdam, adam_update_low_precision
from zsdet.synthesis.amp_linear import AmpLinear

ADAM = dict(lr=1e-2, betas=(0.5, 0.999), eps=1e-8)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = AmpLinear(12, 16)
        self.b = AmpLinear(16, 3, bias=False)
        self.scale = nn.Parameter(torch.ones(3))  # an ordinary parameter: stock Adam path

    def forward(self, x):
        return self.b(torch.relu(self.a(x))) * self.scale


def loss_of(net, x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return net(x).float().pow(2).mean()


@pytest.mark.parametrize("compile_update", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_matches_torch_adam_on_the_same_gradients(compile_update, weight_decay):
    net = Net()
    ref = copy.deepcopy(net)
    opt = AmpAdam(net, compile=compile_update, weight_decay=weight_decay, **ADAM)
    ref_opt = torch.optim.Adam(ref.parameters(), weight_decay=weight_decay, **ADAM)
    for step in range(4):
        x = torch.randn(8, 12)
        opt.zero_grad()
        loss_of(net, x).backward()
        assert net.a.weight.grad.dtype == torch.bfloat16 and net.scale.grad.dtype == torch.float32
        for p, q in zip(net.parameters(), ref.parameters()):  # the reference gets the same gradients
            q.grad = p.grad.float()
        opt.step()
        ref_opt.step()
        for p, q in zip(net.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)  # rounding only (steps are ~lr = 1e-2)
        for layer in (net.a, net.b):  # the bf16 copy equals the new weight and is marked current
            torch.testing.assert_close(layer.low_precision_weight(torch.bfloat16, refresh=False),
                                       layer.weight.detach().bfloat16(), rtol=0, atol=0)
            assert layer._lp_key == layer._weight_key(torch.bfloat16)
    assert opt.state[net.a.weight]["step"].item() == 4


def test_update_function_is_adam():
    """adam_update_low_precision against the textbook formulas, step 3, float64."""
    torch.manual_seed(0)
    p, g, m, v = (torch.randn(10, dtype=torch.float64) for _ in range(4))
    v = v.abs()
    lr, b1, b2, eps, t = 0.1, 0.9, 0.99, 1e-8, 3
    m_new = b1 * m + (1 - b1) * g
    v_new = b2 * v + (1 - b2) * g * g
    expected = p - lr * (m_new / (1 - b1 ** t)) / ((v_new / (1 - b2 ** t)).sqrt() + eps)
    low = torch.empty(10, dtype=torch.float32)
    pp, mm, vv = p.clone(), m.clone(), v.clone()
    adam_update_low_precision(pp, g, mm, vv, torch.tensor(lr / (1 - b1 ** t), dtype=torch.float64),
                              torch.tensor((1 - b2 ** t) ** 0.5, dtype=torch.float64), low, b1, b2, eps, 0.0)
    torch.testing.assert_close(pp, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mm, m_new, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(low, expected.float())


def test_state_dict_round_trip_continues_identically():
    def train(net, opt, xs):
        for x in xs:
            opt.zero_grad()
            loss_of(net, x).backward()
            opt.step()

    xs = [torch.randn(8, 12) for _ in range(4)]
    net = Net()
    opt = AmpAdam(net, compile=False, **ADAM)
    train(net, opt, xs[:2])
    saved = copy.deepcopy((net.state_dict(), opt.state_dict()))
    train(net, opt, xs[2:])
    net2 = Net()
    opt2 = AmpAdam(net2, compile=False, **ADAM)
    net2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    train(net2, opt2, xs[2:])
    for p, q in zip(net.parameters(), net2.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_unsupported_options_and_foreign_low_precision_gradients():
    with pytest.raises(ValueError, match="amsgrad"):
        AmpAdam(Net(), amsgrad=True)
    net = Net()
    opt = AmpAdam(net, compile=False)
    net.scale.grad_dtype = None
    net.scale.grad = torch.ones(3, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="not the weight of an AmpLinear"):
        opt.step()
