"""Compiled causal conv1d + SiLU (``kernels.causal_conv1d_cpu``) against its torch reference
(:meth:`ssm.mamba.CausalConv1d.forward` followed by SiLU), values and every gradient."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import cpu_lib
from kernels.causal_conv1d_cpu import causal_conv1d_silu
from ssm.mamba import CausalConv1d


def _both(conv: CausalConv1d, x: torch.Tensor):
    """(fused, reference) outputs and gradients wrt x, weight, bias for one random upstream gradient."""
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(x.dtype)
    params = [p for p in (conv.conv.weight, conv.conv.bias) if p is not None]
    out = []
    for y in (
        causal_conv1d_silu(x, conv.conv.weight[:, 0], conv.conv.bias),
        torch.nn.functional.silu(conv(x, time_dim=1)),
    ):
        out.append((y.detach(), *torch.autograd.grad(y, [x, *params], g)))
    return out


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 4),
    length=st.integers(1, 12),
    dim=st.integers(1, 20),
    width=st.integers(1, 5),
    bias=st.booleans(),
    strided=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_fused_conv_silu_matches_reference(batch, length, dim, width, bias, strided, seed):
    torch.manual_seed(seed)
    conv = CausalConv1d(dim, width, bias=bias)
    x = torch.randn(batch, length, 2 * dim if strided else dim)
    x = (x[..., ::2] if strided else x).requires_grad_()  # strided: channels not contiguous (copied)
    fused, ref = _both(conv, x)
    for got, want in zip(fused, ref):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (got - want).abs().max()


def test_fused_conv_silu_gradcheck_float64():
    conv = CausalConv1d(5, 3).double()
    x = torch.randn(2, 7, 5, dtype=torch.float64, requires_grad=True)
    w = conv.conv.weight[:, 0].detach().clone().requires_grad_()
    b = conv.conv.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(causal_conv1d_silu, (x, w, b), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("threads", [2, 3])
def test_batch_split_over_threads_gives_the_same_result(threads):
    torch.manual_seed(0)
    conv = CausalConv1d(16, 4)
    x = torch.randn(5, 9, 16, requires_grad=True)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _both(conv, x)[0]
        torch.set_num_threads(threads)
        many = _both(conv, x)[0]
    finally:
        torch.set_num_threads(saved)
    for a, b in zip(one, many):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)  # partial sums in another order


def test_mamba_uses_the_fused_kernel_on_cpu():
    """CausalConv1d.forward_silu takes the compiled path for channels-last CPU inputs, and equals the torch
    path (the one it takes on other devices) for channels-first inputs."""
    assert cpu_lib.available()
    torch.manual_seed(0)
    conv = CausalConv1d(6, 4)
    x = torch.randn(2, 10, 6)
    fused = conv.forward_silu(x, time_dim=1)
    torch_path = conv.forward_silu(x.transpose(1, 2), time_dim=-1).transpose(1, 2)
    assert torch.allclose(fused, torch_path, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork (POSIX)")
def test_threaded_kernels_work_in_a_forked_child():
    """A child forked after the parent used the thread pool gets a working pool of its own."""
    import os
    import select
    import signal

    torch.manual_seed(0)
    conv = CausalConv1d(8, 4)
    x = torch.randn(4, 6, 8)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = conv.forward_silu(x, time_dim=1)  # creates the parent's pool
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: writes 1 if its result is right, 0 if wrong, nothing if it hangs
            ok = torch.allclose(conv.forward_silu(x, time_dim=1), expected)
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
        os.close(write)
        ready, _, _ = select.select([read], [], [], 60)
        answer = os.read(read, 1) if ready else b"hang"
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    finally:
        torch.set_num_threads(saved)
    assert answer == b"1"
