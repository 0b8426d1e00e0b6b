import math

import pytest
import torch

from ssm.s4d import S4D, fft_causal_conv


def _run_steps(layer, x):
    state, ys = layer.init_state(x.size(0)), []
    for t in range(x.size(1)):
        state, y_t = layer.step(state, x[:, t])
        ys.append(y_t)
    return torch.stack(ys, 1)


def test_fft_conv_equals_direct_convolution():
    u = torch.randn(2, 3, 9, dtype=torch.float64)
    k = torch.randn(3, 9, dtype=torch.float64)
    direct = torch.stack([sum(k[:, l] * u[..., t - l] for l in range(t + 1)) for t in range(9)], dim=-1)
    torch.testing.assert_close(fft_causal_conv(u, k), direct)


@pytest.mark.parametrize("init", ["lin", "inv"])
def test_fft_convolution_equals_recurrence(init):
    torch.manual_seed(0)
    layer = S4D(8, d_state=16, init=init, dt_min=0.01, dt_max=0.5)
    x = torch.randn(2, 20, 8)
    torch.testing.assert_close(_run_steps(layer, x), layer(x), atol=1e-4, rtol=1e-4)


def test_initialisation():
    lin, inv = S4D(4, d_state=8, init="lin"), S4D(4, d_state=8, init="inv")
    torch.testing.assert_close(lin.A_imag[0], math.pi * torch.arange(4.0))
    n = torch.arange(4.0)
    torch.testing.assert_close(inv.A_imag[0], 8 / math.pi * (8 / (2 * n + 1) - 1))
    torch.testing.assert_close(-torch.exp(lin.log_A_real), torch.full((4, 4), -0.5))


def test_zeroed_left_padding_does_not_change_real_outputs():
    # the kernel is time-invariant, so masked (zeroed) steps before a sequence contribute nothing
    torch.manual_seed(0)
    layer = S4D(4, d_state=8)
    x = torch.randn(1, 5, 4)
    padded = torch.cat([torch.randn(1, 3, 4), x], dim=1)
    mask = torch.tensor([[False] * 3 + [True] * 5])
    torch.testing.assert_close(layer(padded, mask)[:, 3:], layer(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kwargs", [{"d_state": 7}, {"init": "legs"}, {"dt_min": 0.5, "dt_max": 0.1}])
def test_bad_values_raise(kwargs):
    with pytest.raises(ValueError):
        S4D(4, **kwargs)
