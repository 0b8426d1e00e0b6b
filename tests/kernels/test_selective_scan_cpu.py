"""Compiled CPU selective scan (``kernels.selective_scan_cpu``, the `chunked` backend's core on CPU) in the
regimes the generic hypothesis grid of ``tests/ssm/test_selective_scan.py`` does not reach: extreme steps
(its arithmetic softplus and exp), the strided views Mamba hands over, and time-invariant B/C."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssm import selective_scan
from tests.ssm.test_selective_scan import assert_close_scan, make_inputs, run_scan


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1.0, 40.0), shift=st.floats(-30.0, 30.0), seed=st.integers(0, 10_000))
def test_extreme_steps_match_the_float64_reference(scale, shift, seed):
    """delta + bias spread over [-70, 70]: both softplus branches (threshold 20), tiny and huge steps."""
    inputs = make_inputs(2, 6, 21, 5, None, seed=seed)
    inputs["delta"] = inputs["delta"] * scale + shift
    ref = run_scan(
        {k: None if v is None else v.double() for k, v in inputs.items()}, softplus=True, backend="reference"
    )
    got = run_scan(inputs, softplus=True, backend="chunked", chunk_size=4)
    assert_close_scan(got, tuple(_float(x) for x in ref), 2e-5, f"scale={scale} shift={shift}")


def _float(x):
    return {k: v.float() for k, v in x.items()} if isinstance(x, dict) else x.float()


def test_mamba_layout_views_equal_contiguous_inputs():
    """Mamba passes transposed channels-last views and B/C/z as slices of projections: same result as
    contiguous copies, with no copy needed for u, delta and z."""
    torch.manual_seed(0)
    batch, length, dim, n, rank = 3, 11, 8, 4, 2
    xz = torch.randn(batch, length, 2 * dim)
    proj = torch.randn(batch, length, rank + 2 * n)
    u, z = xz[..., :dim].transpose(1, 2), xz[..., dim:].transpose(1, 2)
    delta = torch.randn(batch, length, dim).transpose(1, 2)
    B = proj[..., rank : rank + n].transpose(1, 2)
    C = proj[..., rank + n :].transpose(1, 2)
    A, D, bias = -torch.rand(dim, n) - 0.5, torch.randn(dim), torch.randn(dim)
    views = (u, delta, A, B, C, D, z, bias)
    copies = tuple(t.contiguous() for t in views)
    for args in (views, copies):
        for t in args:
            t.requires_grad_()
    outs = []
    for args in (views, copies):
        y, last = selective_scan(*args[:7], delta_bias=args[7], delta_softplus=True, return_last_state=True)
        grads = torch.autograd.grad((y.square().sum() + last.sum()), args)
        outs.append((y, last, *grads))
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("which", ["B", "C", "both"])
def test_time_invariant_B_C(which):
    """(dim, d_state) B/C reach the kernel as stride-0 views (no per-step copy) and match the reference."""
    inputs = make_inputs(2, 6, 9, 3, None, seed=5)
    g = torch.Generator().manual_seed(1)
    for name in ("B", "C") if which == "both" else (which,):
        inputs[name] = torch.randn(6, 3, generator=g)
    ref = run_scan(inputs, softplus=True, backend="reference")
    got = run_scan(inputs, softplus=True, backend="chunked", chunk_size=4)
    assert_close_scan(got, ref, 1e-5, f"time-invariant {which}")
