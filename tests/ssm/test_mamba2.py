import pytest
import torch

from ssm.mamba2 import Mamba2, segsum, ssd_chunked, ssd_recurrent


def _ssd_inputs(batch=2, length=12, heads=4, headdim=3, groups=2, d_state=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    kw = {"generator": g, "dtype": torch.float64}
    x = torch.randn(batch, length, heads, headdim, **kw)
    dt = torch.rand(batch, length, heads, **kw) * 0.5
    A = -torch.rand(heads, **kw) * 4
    B = torch.randn(batch, length, groups, d_state, **kw)
    C = torch.randn(batch, length, groups, d_state, **kw)
    return x, dt, A, B, C


def test_segsum_matches_definition():
    a = torch.randn(2, 6, dtype=torch.float64)
    out = segsum(a)
    for i in range(6):
        for j in range(6):
            expected = (
                a[:, j + 1 : i + 1].sum(-1) if i >= j else torch.full((2,), float("-inf"), dtype=a.dtype)
            )
            torch.testing.assert_close(out[:, i, j], expected)


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 5, 12, 16])  # divides 12 or not, and longer than it
def test_chunked_equals_recurrence(chunk_size):
    x, dt, A, B, C = _ssd_inputs()
    init = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    y_ref, s_ref = ssd_recurrent(x, dt, A, B, C, initial_state=init)
    y, s = ssd_chunked(x, dt, A, B, C, chunk_size=chunk_size, initial_state=init)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(s, s_ref)


def test_chunked_gradients_match_recurrence():
    inputs = [t.requires_grad_() for t in _ssd_inputs(length=7)]
    grads = []
    for fn in (lambda *a: ssd_recurrent(*a)[0], lambda *a: ssd_chunked(*a, chunk_size=3)[0]):
        (fn(*inputs) ** 2).sum().backward()
        grads.append([t.grad.clone() for t in inputs])
        for t in inputs:
            t.grad = None
    for g_ref, g in zip(*grads, strict=True):
        torch.testing.assert_close(g, g_ref)


def test_mixer_step_equals_forward():
    torch.manual_seed(0)
    layer = Mamba2(16, d_state=8, headdim=8, ngroups=2, chunk_size=4).eval()
    x = torch.randn(3, 10, 16)
    y = layer(x)
    state, steps = layer.init_state(3), []
    for t in range(10):
        state, y_t = layer.step(state, x[:, t])
        steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), y, atol=1e-5, rtol=1e-4)


def test_mask_freezes_state_at_padding():
    torch.manual_seed(0)
    layer = Mamba2(8, d_state=4, headdim=4, d_conv=1).eval()  # width-1 conv: no mixing through the conv
    x = torch.randn(1, 6, 8)
    mask = torch.tensor([[True, True, False, False, True, True]])
    y_masked = layer(x, mask)
    y_dropped = layer(x[:, mask[0]])  # same sequence without the padded steps
    torch.testing.assert_close(y_masked[:, mask[0]], y_dropped, atol=1e-5, rtol=1e-4)


def test_init_ranges():
    layer = Mamba2(32, headdim=16, dt_min=1e-3, dt_max=0.1)
    dt = torch.nn.functional.softplus(layer.dt_bias)
    assert layer.nheads == 4 and dt.min() >= 1e-3 - 1e-7 and dt.max() <= 0.1 + 1e-7
    A = -torch.exp(layer.A_log)
    assert (A <= -1).all() and (A >= -16).all()


@pytest.mark.parametrize("kwargs", [{"headdim": 7}, {"ngroups": 3}, {"chunk_size": 0}, {"d_state": 0}])
def test_bad_values_raise(kwargs):
    with pytest.raises(ValueError):
        Mamba2(16, **kwargs)
