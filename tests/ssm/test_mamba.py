import math

import pytest
import torch
import torch.nn.functional as F

from ssm.mamba import CausalConv1d, Mamba, init_dt_bias


def _run_steps(module, x):
    state, ys = module.init_state(x.size(0)), []
    for t in range(x.size(1)):
        state, y_t = module.step(state, x[:, t])
        ys.append(y_t)
    return torch.stack(ys, 1)


def test_initialisation():
    layer = Mamba(40, d_state=6, expand=2, dt_min=1e-3, dt_max=0.1)
    assert layer.dt_rank == math.ceil(40 / 16) and layer.d_inner == 80
    torch.testing.assert_close(-torch.exp(layer.A_log), -torch.arange(1.0, 7.0).expand(80, 6))
    dt = F.softplus(layer.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert (layer.D == 1).all()


def test_dt_bias_is_inverse_softplus():
    torch.manual_seed(0)
    bias = init_dt_bias(1000, dt_min=1e-4, dt_max=1.0, dt_init_floor=0.0)
    dt = F.softplus(bias)
    assert dt.min() >= 1e-4 * (1 - 1e-4) and dt.max() <= 1.0 + 1e-6
    # log-uniform: the median of log(dt) sits near the middle of [log 1e-4, log 1]
    assert abs(dt.log().median().item() - math.log(1e-2)) < 0.5


@pytest.mark.parametrize("width", [1, 4])
def test_causal_conv_equals_depthwise_conv1d_in_both_layouts(width):
    """The shifted-sum forward is nn.Conv1d's causal depthwise convolution, also channels-last, with grads."""
    conv = CausalConv1d(6, width)
    x = torch.randn(3, 6, 9, requires_grad=True)
    ref = F.conv1d(F.pad(x, (width - 1, 0)), conv.conv.weight, conv.conv.bias, groups=6)
    torch.testing.assert_close(conv(x), ref, atol=1e-6, rtol=1e-5)
    last = conv(x.transpose(1, 2), time_dim=1).transpose(1, 2)
    torch.testing.assert_close(last, ref, atol=1e-6, rtol=1e-5)
    g_ref = torch.autograd.grad(ref.square().sum(), [x, conv.conv.weight])
    g = torch.autograd.grad(conv(x).square().sum(), [x, conv.conv.weight])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_causal_conv_step_equals_forward():
    conv = CausalConv1d(5, 3)
    x = torch.randn(2, 5, 7)
    steps = _run_steps(conv, x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(steps, conv(x), atol=1e-6, rtol=1e-5)
    x2 = x.clone()
    x2[..., 4] += 1.0
    torch.testing.assert_close(conv(x2)[..., :4], conv(x)[..., :4])


def test_step_equals_forward():
    torch.manual_seed(0)
    layer = Mamba(16, d_state=4, d_conv=3, scan_backend="reference").eval()
    x = torch.randn(3, 9, 16)
    torch.testing.assert_close(_run_steps(layer, x), layer(x), atol=1e-5, rtol=1e-4)


def _output_and_grads(layer, x, mask, backend):
    layer.scan_backend = backend
    layer.zero_grad()
    y = layer(x, mask)
    y.pow(2).sum().backward()
    return y.detach(), [p.grad.clone() for p in layer.parameters()]


@pytest.mark.parametrize("backend", ["chunked", "triton"])  # triton runs in the interpreter on CPU
def test_scan_backends_agree(backend):
    torch.manual_seed(0)
    layer = Mamba(8, d_state=4, expand=2)
    x = torch.randn(2, 10, 8)
    mask = torch.tensor([[True] * 10, [True] * 6 + [False] * 4])  # the second row is right-padded
    y_ref, grads_ref = _output_and_grads(layer, x, mask, "reference")
    y, grads = _output_and_grads(layer, x, mask, backend)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs", [{"d_state": 0}, {"expand": 0}, {"d_conv": 0}, {"dt_rank": 0}, {"scan_backend": "cuda"}]
)
def test_bad_values_raise(kwargs):
    with pytest.raises(ValueError):
        Mamba(8, **kwargs)
