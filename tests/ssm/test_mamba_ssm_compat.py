"""Code written against mamba_ssm's ``selective_scan_fn`` / ``selective_state_update`` runs unchanged.

The references below are literal transcriptions (einops spelled out with torch ops) of mamba_ssm's
``selective_scan_ref`` (mamba_ssm/ops/selective_scan_interface.py, real A only) and
``selective_state_update_ref`` (mamba_ssm/ops/triton/selective_state_update.py), state-spaces/mamba.
Calls use mamba_ssm's positional and keyword argument names.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ssm import selective_scan_fn, selective_scan_ref, selective_state_step, selective_state_update
from tests.ssm.test_selective_scan import rel_err


def mamba_selective_scan_ref(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
):
    dtype_in = u.dtype
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, dstate = u.shape[0], A.shape[0], A.shape[1]
    is_variable_B = B.dim() >= 3
    is_variable_C = C.dim() >= 3
    B = B.float()
    C = C.float()
    x = A.new_zeros((batch, dim, dstate))
    ys = []
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    if not is_variable_B:
        deltaB_u = torch.einsum("bdl,dn,bdl->bdln", delta, B, u)
    else:
        if B.dim() == 3:
            deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
        else:
            B = B.repeat_interleave(dim // B.shape[1], dim=1)
            deltaB_u = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)
    if is_variable_C and C.dim() == 4:
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    last_state = None
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        if not is_variable_C:
            y = torch.einsum("bdn,dn->bd", x, C)
        else:
            if C.dim() == 3:
                y = torch.einsum("bdn,bn->bd", x, C[:, :, i])
            else:
                y = torch.einsum("bdn,bdn->bd", x, C[:, :, :, i])
        if i == u.shape[2] - 1:
            last_state = x
        ys.append(y)
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    out = out.to(dtype=dtype_in)
    return out if not return_last_state else (out, last_state)


def mamba_selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    has_heads = state.dim() > 3
    if state.dim() == 3:
        state = state.unsqueeze(1)
    if x.dim() == 2:
        x = x.unsqueeze(1)
    if dt.dim() == 2:
        dt = dt.unsqueeze(1)
    if A.dim() == 2:
        A = A.unsqueeze(0)
    if B.dim() == 2:
        B = B.unsqueeze(1)
    if C.dim() == 2:
        C = C.unsqueeze(1)
    if D is not None and D.dim() == 1:
        D = D.unsqueeze(0)
    if z is not None and z.dim() == 2:
        z = z.unsqueeze(1)
    if dt_bias is not None and dt_bias.dim() == 1:
        dt_bias = dt_bias.unsqueeze(0)
    _, nheads, _, _ = state.shape
    ngroups = B.shape[1]
    if dt_bias is not None:
        dt = dt + dt_bias
    dt = F.softplus(dt) if dt_softplus else dt
    dA = torch.exp(dt[..., None] * A)
    B = B.repeat_interleave(nheads // ngroups, dim=1)
    C = C.repeat_interleave(nheads // ngroups, dim=1)
    dB = dt[..., None] * B[:, :, None, :]
    state.copy_(state * dA + dB * x[..., None])
    out = torch.einsum("bhdn,bhn->bhd", state.to(C.dtype), C)
    if D is not None:
        out += (x * D).to(out.dtype)
    out = (out if z is None else out * F.silu(z)).to(x.dtype)
    if not has_heads:
        out = out.squeeze(1)
    return out


# --------------------------------------------------------------------------------------------------------
# selective_scan_fn
# --------------------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 2),
    dim=st.sampled_from([2, 4, 6]),
    length=st.integers(1, 12),
    d_state=st.integers(1, 5),
    b_kind=st.sampled_from(["invariant", "variable", "grouped"]),
    c_kind=st.sampled_from(["invariant", "variable", "grouped"]),
    opts=st.fixed_dictionaries(
        {"D": st.booleans(), "z": st.booleans(), "bias": st.booleans(), "softplus": st.booleans()}
    ),
    seed=st.integers(0, 2**16),
)
def test_selective_scan_fn_matches_mamba_ssm_reference(
    batch, dim, length, d_state, b_kind, c_kind, opts, seed
):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    def bc(kind):
        return {
            "invariant": r(dim, d_state),
            "variable": r(batch, d_state, length),
            "grouped": r(batch, 2, d_state, length),
        }[kind]

    u, delta = r(batch, dim, length), 0.5 * r(batch, dim, length)
    if not opts["softplus"]:
        delta = delta.abs()
    A = -torch.exp(0.5 * r(dim, d_state))
    B, C = bc(b_kind), bc(c_kind)
    D = r(dim) if opts["D"] else None
    z = r(batch, dim, length) if opts["z"] else None
    delta_bias = 0.3 * r(dim) if opts["bias"] else None
    ref, ref_last = mamba_selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, opts["softplus"], True)
    for fn in (selective_scan_fn, selective_scan_ref):  # positional, as mamba_ssm callers write it
        out, last = fn(u, delta, A, B, C, D, z, delta_bias, opts["softplus"], True)
        assert rel_err(out, ref) < 1e-5 and rel_err(last, ref_last) < 1e-5
    out = selective_scan_fn(
        u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=opts["softplus"]
    )  # keywords, no last state
    assert rel_err(out, ref) < 1e-5


def test_selective_scan_fn_time_invariant_gradients():
    g = torch.Generator().manual_seed(0)
    batch, dim, length, d_state = 2, 4, 9, 3
    leaves = [
        torch.randn(batch, dim, length, generator=g),
        torch.rand(batch, dim, length, generator=g),
        -torch.rand(dim, d_state, generator=g) - 0.1,
        torch.randn(dim, d_state, generator=g),
        torch.randn(batch, d_state, length, generator=g),
    ]

    def grads(fn):
        xs = [t.clone().requires_grad_() for t in leaves]
        fn(*xs).pow(2).sum().backward()
        return [x.grad for x in xs]

    for got, ref in zip(grads(selective_scan_fn), grads(mamba_selective_scan_ref)):
        assert rel_err(got, ref) < 1e-5


# --------------------------------------------------------------------------------------------------------
# selective_state_update
# --------------------------------------------------------------------------------------------------------


def state_update_inputs(layout, batch, nheads, dim, dstate, ngroups, opts, seed, dtype=torch.float32):
    """mamba_ssm-shaped arguments; layout 'single' (3-D state) or 'heads' (4-D state)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    lead = (batch, dim) if layout == "single" else (batch, nheads, dim)
    head = (dim,) if layout == "single" else (nheads, dim)
    groups = 1 if layout == "single" else ngroups
    bshape = (batch, dstate) if layout == "single" else (batch, groups, dstate)
    return {
        "state": r(*lead, dstate),
        "x": r(*lead),
        "dt": 0.5 * r(*lead) if opts["softplus"] else torch.rand(*lead, generator=g).to(dtype),
        "A": -torch.exp(0.5 * r(*head, dstate)),
        "B": r(*bshape),
        "C": r(*bshape),
        "D": r(*head) if opts["D"] else None,
        "z": r(*lead) if opts["z"] else None,
        "dt_bias": 0.3 * r(*head) if opts["bias"] else None,
        "dt_softplus": opts["softplus"],
    }


OPTS = st.fixed_dictionaries(
    {"D": st.booleans(), "z": st.booleans(), "bias": st.booleans(), "softplus": st.booleans()}
)


@settings(max_examples=40, deadline=None)
@given(
    layout=st.sampled_from(["single", "heads"]),
    batch=st.integers(1, 3),
    nheads_groups=st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 2)]),
    dim=st.integers(1, 6),
    dstate=st.integers(1, 5),
    opts=OPTS,
    seed=st.integers(0, 2**16),
)
def test_state_update_matches_mamba_ssm_reference(layout, batch, nheads_groups, dim, dstate, opts, seed):
    nheads, ngroups = nheads_groups
    kw = state_update_inputs(layout, batch, nheads, dim, dstate, ngroups, opts, seed)
    ref_state = kw["state"].clone()
    ref_out = mamba_selective_state_update_ref(
        ref_state,
        *[kw[k] for k in ("x", "dt", "A", "B", "C")],
        D=kw["D"],
        z=kw["z"],
        dt_bias=kw["dt_bias"],
        dt_softplus=kw["dt_softplus"],
    )
    state = kw.pop("state")
    out = selective_state_update(state, **kw)  # mamba_ssm's keyword names; state updated in place
    assert out.shape == ref_out.shape and out.dtype == ref_out.dtype
    assert rel_err(out, ref_out) < 1e-5
    assert rel_err(state, ref_state) < 1e-5


@pytest.mark.parametrize("layout", ["single", "heads"])
def test_state_batch_indices_and_padding(layout):
    opts = {"D": True, "z": True, "bias": True, "softplus": True}
    kw = state_update_inputs(layout, 3, 2, 4, 3, 1, opts, seed=1)
    pool = torch.randn(5, *kw["state"].shape[1:])  # more state rows than batch rows
    idx = torch.tensor([4, -1, 0])  # row 1 is padding
    expect = pool.clone()
    ref_rows = expect[idx.clamp(min=0)].clone()
    ref_out = mamba_selective_state_update_ref(
        ref_rows,
        *[kw[k] for k in ("x", "dt", "A", "B", "C")],
        D=kw["D"],
        z=kw["z"],
        dt_bias=kw["dt_bias"],
        dt_softplus=True,
    )
    expect[4], expect[0] = ref_rows[0], ref_rows[2]
    kw.pop("state")
    out = selective_state_update(pool, **kw, state_batch_indices=idx)
    assert torch.all(out[1] == 0), "padding row: output 0"
    assert rel_err(out[[0, 2]], ref_out[[0, 2]]) < 1e-5
    assert rel_err(pool, expect) < 1e-5  # rows 1-3 untouched, rows 0 and 4 updated


def test_state_update_keeps_state_dtype_and_accumulates_in_float32():
    opts = {"D": True, "z": True, "bias": True, "softplus": True}
    kw = state_update_inputs("heads", 2, 2, 4, 3, 1, opts, seed=2, dtype=torch.bfloat16)
    state = kw.pop("state")
    ref_state = state.float()
    ref = mamba_selective_state_update_ref(
        ref_state,
        *[kw[k].float() for k in ("x", "dt", "A", "B", "C")],
        D=kw["D"].float(),
        z=kw["z"].float(),
        dt_bias=kw["dt_bias"].float(),
        dt_softplus=True,
    )
    out = selective_state_update(state, **kw)
    assert out.dtype == torch.bfloat16 and state.dtype == torch.bfloat16
    assert rel_err(out.float(), ref) < 1e-2 and rel_err(state.float(), ref_state) < 1e-2


def test_state_step_is_functional_and_differentiable():
    opts = {"D": True, "z": True, "bias": True, "softplus": True}
    kw = state_update_inputs("single", 2, 1, 4, 3, 1, opts, seed=3)
    state = kw.pop("state").requires_grad_()
    before = state.detach().clone()
    y, new = selective_state_step(
        state, kw["x"], kw["dt"], kw["A"], kw["B"], kw["C"], kw["D"], kw["z"], kw["dt_bias"], True
    )
    assert torch.equal(state.detach(), before)
    (y.sum() + new.sum()).backward()
    assert state.grad is not None and torch.isfinite(state.grad).all()


@pytest.mark.parametrize(
    "change, name",
    [
        (lambda kw: kw.update(x=kw["x"][:, :-1]), "x"),
        (lambda kw: kw.update(A=kw["A"][:-1]), "A"),
        (
            lambda kw: kw.update(B=torch.randn(2, 3, 3), C=torch.randn(2, 3, 3)),
            "ngroups",
        ),  # 2 heads, 3 groups
        (lambda kw: kw.update(C=kw["C"][..., :-1]), "C"),
        (lambda kw: kw.update(D=torch.randn(4)), "D"),
        (lambda kw: kw.update(state_batch_indices=torch.tensor([0.0, 1.0])), "state_batch_indices"),
        (lambda kw: kw.update(state_batch_indices=torch.tensor([0, 9])), "state_batch_indices"),
        (lambda kw: kw.update(backend="cuda"), "backend"),
    ],
)
def test_state_update_validation(change, name):
    opts = {"D": True, "z": False, "bias": False, "softplus": False}
    kw = state_update_inputs("heads", 2, 2, 4, 3, 1, opts, seed=4)
    kw.pop("z")
    change(kw)
    with pytest.raises(ValueError, match=name):
        selective_state_update(**kw)
