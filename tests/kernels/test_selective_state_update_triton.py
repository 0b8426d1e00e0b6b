"""Triton selective_state_update vs the PyTorch path: both layouts, state_batch_indices, z, D, dt_bias, softplus.

Without a GPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1`` from tests/conftest.py).
On CUDA the same tests run on the device, and the dtype test covers fp32/bf16/fp16.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssm import selective_state_update
from tests.ssm.test_mamba_ssm_compat import OPTS, state_update_inputs
from tests.ssm.test_selective_scan import rel_err

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def run(kw: dict, backend: str, idx=None, pool_rows: int | None = None, device: str = "cpu"):
    """Update a copy of the state (or of a larger pool) with ``backend``; return (out, state) on the CPU."""
    kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    state = kw.pop("state").clone()
    if pool_rows is not None:
        g = torch.Generator().manual_seed(9)
        state = torch.randn(pool_rows, *state.shape[1:], generator=g).to(device, state.dtype)
    idx = idx.to(device) if idx is not None else None
    with torch.no_grad():
        out = selective_state_update(state, **kw, state_batch_indices=idx, backend=backend)
    return out.cpu(), state.cpu()


@settings(max_examples=30, deadline=None)
@given(
    layout=st.sampled_from(["single", "heads"]),
    batch=st.integers(1, 3),
    nheads_groups=st.sampled_from([(1, 1), (2, 1), (2, 2), (3, 3), (4, 2)]),
    dim=st.integers(1, 9),
    dstate=st.integers(1, 9),
    opts=OPTS,
    use_idx=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_triton_state_update_matches_torch(layout, batch, nheads_groups, dim, dstate, opts, use_idx, seed):
    nheads, ngroups = nheads_groups
    kw = state_update_inputs(layout, batch, nheads, dim, dstate, ngroups, opts, seed)
    idx = pool = None
    if use_idx:  # a larger state pool, rows in a random order, one padding row when batch > 1
        pool = batch + 2
        idx = torch.randperm(pool, generator=torch.Generator().manual_seed(seed))[:batch]
        if batch > 1:
            idx[0] = -1
    ref = run(kw, "torch", idx, pool)
    got = run(kw, "triton", idx, pool, DEVICE)
    assert got[0].shape == ref[0].shape and got[0].dtype == ref[0].dtype
    assert rel_err(got[0], ref[0]) < 1e-5, "out"
    assert rel_err(got[1], ref[1]) < 1e-5, "state"


def test_triton_state_update_strided_inputs():
    """Non-contiguous views (as Mamba's projections produce) and a broadcast A (stride 0 over heads)."""
    opts = {"D": True, "z": True, "bias": True, "softplus": True}
    kw = state_update_inputs("heads", 2, 3, 4, 5, 1, opts, seed=3)
    wide = torch.randn(2, 3, 8)
    kw["x"] = wide[..., ::2]
    kw["A"] = kw["A"][:1].expand(3, 4, 5)
    ref = run(kw, "torch")
    got = run(kw, "triton", device=DEVICE)
    assert rel_err(got[0], ref[0]) < 1e-5 and rel_err(got[1], ref[1]) < 1e-5


DTYPES = [torch.float32] + ([torch.bfloat16, torch.float16] if CUDA else [])


@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_state_update_dtypes(dtype):
    opts = {"D": True, "z": True, "bias": True, "softplus": True}
    kw = state_update_inputs("heads", 4, 2, 16, 16, 1, opts, seed=5, dtype=dtype)
    ref = run({k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}, "torch")
    got = run(kw, "triton", device=DEVICE)
    assert got[0].dtype == dtype and got[1].dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # one rounding of the output/state to the half type
    assert rel_err(got[0].float(), ref[0]) < tol and rel_err(got[1].float(), ref[1]) < tol


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_auto_dispatches_to_triton_on_cuda(monkeypatch):
    import kernels.selective_state_update_triton as k

    calls = []
    real = k.selective_state_update_triton
    monkeypatch.setattr(
        k, "selective_state_update_triton", lambda *a, **kw: calls.append(1) or real(*a, **kw)
    )
    kw = state_update_inputs("single", 2, 1, 8, 4, 1, dict.fromkeys(("D", "z", "bias", "softplus"), True), 0)
    run(kw, "auto", device="cuda")
    assert calls, "auto must use the Triton kernel for CUDA tensors without autograd"
