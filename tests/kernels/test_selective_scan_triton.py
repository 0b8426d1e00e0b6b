"""Triton selective scan vs the PyTorch reference: forward, every gradient, masks, stability.

Without a GPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` from tests/conftest.py), which
executes each program in Python: shapes stay small (batch <= 2, dim <= 20, length <= 40, d_state <= 8).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.selective_scan_triton as sst
from ssm import selective_scan
from tests.ssm.test_selective_scan import (
    assert_close_scan,
    check_padding_invariance,
    large_decay_inputs,
    make_inputs,
    random_mask,
    rel_err,
    run_scan,
    scan_configs,
    split_config,
)

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def to_device(inputs: dict) -> dict:
    return {k: (v.to(DEVICE) if v is not None else None) for k, v in inputs.items()}


@contextlib.contextmanager
def block_size(block_d: int | None):
    """Run the kernels with ``block_d`` channels per program (None: the default)."""
    saved = sst.DEFAULT_BLOCK_D
    sst.DEFAULT_BLOCK_D = block_d or saved
    try:
        yield
    finally:
        sst.DEFAULT_BLOCK_D = saved


def triton_vs_reference(
    cfg: dict, mask_kind: str, tol: float = 1e-5, block_d: int | None = None, **kw
) -> None:
    with block_size(block_d):
        _triton_vs_reference(cfg, mask_kind, tol, **kw)


def _triton_vs_reference(cfg: dict, mask_kind: str, tol: float, **kw) -> None:
    cfg, softplus, _ = split_config({**cfg, "mask": mask_kind})
    inputs = make_inputs(**cfg)
    mask = random_mask(cfg["batch"], cfg["length"], mask_kind, cfg["seed"])
    ref = run_scan(inputs, softplus=softplus, backend="reference", mask=mask)
    got = run_scan(
        to_device(inputs),
        softplus=softplus,
        backend="triton",
        mask=mask.to(DEVICE) if mask is not None else None,
        **kw,
    )
    got = (got[0].cpu(), got[1].cpu(), {k: v.cpu() for k, v in got[2].items()})
    assert_close_scan(got, ref, tol, f"triton {kw} {cfg} mask={mask_kind}")


@settings(max_examples=40, deadline=None)
@given(
    cfg=scan_configs(),
    chunk=st.sampled_from([None, 1, 4, 7]),
    block_d=st.sampled_from([None, 4, 8]),
)
def test_triton_matches_reference(cfg, chunk, block_d):
    cfg, _, mask_kind = split_config(cfg)
    triton_vs_reference(cfg, mask_kind, chunk_size=chunk, block_d=block_d)


BASE = {"batch": 2, "has_D": True, "has_z": True, "has_bias": True, "softplus": True, "seed": 1}


@pytest.mark.parametrize(
    "shape, kw",
    [
        ({"dim": 5, "length": 1, "d_state": 3, "groups": None}, {"block_d": 4}),  # length 1, dim % block != 0
        (
            {"dim": 6, "length": 33, "d_state": 5, "groups": None},
            {"block_d": 4, "chunk_size": 8},
        ),  # odd length, N=5
        (
            {"dim": 12, "length": 9, "d_state": 4, "groups": 3},
            {"block_d": 8},
        ),  # group straddles blocks: atomics
        (
            {"dim": 16, "length": 9, "d_state": 8, "groups": 2},
            {"block_d": 8},
        ),  # block-aligned groups: partials
        ({"dim": 20, "length": 40, "d_state": 2, "groups": 1}, {}),  # default block/chunk
    ],
)
@pytest.mark.parametrize("mask_kind", ["none", "left"])
def test_triton_edge_shapes(shape, kw, mask_kind):
    triton_vs_reference({**BASE, **shape}, mask_kind, **kw)


@pytest.mark.parametrize(
    "flags",
    [
        {"has_D": False, "has_z": False, "has_bias": False, "softplus": False},
        {"has_D": True, "has_z": False, "has_bias": False, "softplus": True},
        {"has_D": False, "has_z": True, "has_bias": True, "softplus": False},
    ],
)
def test_triton_optional_inputs(flags):
    triton_vs_reference(
        {**BASE, **flags, "dim": 7, "length": 13, "d_state": 3, "groups": None},
        "right",
        chunk_size=4,
        block_d=4,
    )


def test_triton_padding_mask_left_and_right():
    with block_size(4):
        check_padding_invariance("triton", DEVICE, chunk_size=4)


def test_triton_large_delta_times_A_is_stable():
    inputs = large_decay_inputs(21)
    ref = run_scan(inputs, softplus=False, backend="reference")
    got = run_scan(to_device(inputs), softplus=False, backend="triton", chunk_size=4)
    got = (got[0].cpu(), got[1].cpu(), {k: v.cpu() for k, v in got[2].items()})
    for part in (got[0], got[1], *got[2].values()):
        assert torch.isfinite(part).all()
    assert_close_scan(got, ref, 1e-5, "large delta*|A|")


def test_triton_softplus_extremes():
    """Pre-activations far in both tails (softplus identity above 20, ~exp below)."""
    inputs = make_inputs(1, 4, 6, 2, None, seed=4)
    inputs["delta"] = torch.tensor([-30.0, -15.0, -1.0, 0.0, 19.0, 25.0]).expand(1, 4, 6).contiguous() * 0.5
    inputs["delta"][0, :, -1] = 25.0
    ref = run_scan(inputs, softplus=True, backend="reference")
    got = run_scan(to_device(inputs), softplus=True, backend="triton")
    got = (got[0].cpu(), got[1].cpu(), {k: v.cpu() for k, v in got[2].items()})
    assert_close_scan(got, ref, 1e-5, "softplus tails")


def test_triton_without_gpu_or_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(sst, "_interpreting", lambda: False)
    i = make_inputs(1, 2, 3, 2, None)
    with pytest.raises(ValueError, match="triton backend needs CUDA"):
        selective_scan(i["u"], i["delta"], i["A"], i["B"], i["C"], backend="triton")


# output rounding of each dtype (unit roundoff x a margin for a few roundings): fp32 / fp16 / bf16
GPU_TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("groups", [None, 2])
def test_triton_dtypes_on_gpu(dtype, groups):
    """Compiled kernels (no interpreter) vs the fp32 reference on the same, already rounded, inputs."""
    inputs = make_inputs(2, 64, 300, 16, groups, seed=2, dtype=dtype)
    ref = run_scan({k: v.float() for k, v in inputs.items()}, softplus=True, backend="reference")
    y, last, grads = run_scan(to_device(inputs), softplus=True, backend="triton")
    assert y.dtype == dtype and last.dtype == torch.float32
    tol = GPU_TOL[dtype]
    assert rel_err(y.float().cpu(), ref[0]) < tol, "y"
    assert rel_err(last.cpu(), ref[1]) < 1e-4, "last_state (accumulated and returned in fp32)"
    for k, g in grads.items():
        assert g.dtype == dtype, k
        # gradients are written in the input dtype after fp32 accumulation: one rounding, plus the
        # rounding of the upstream weights run_scan draws in that dtype
        assert rel_err(g.float().cpu(), ref[2][k]) < 4 * tol, k


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_auto_uses_triton_on_gpu_and_matches_chunked():
    inputs = make_inputs(2, 64, 500, 16, None, seed=3)
    ref = run_scan(inputs, softplus=True, backend="chunked")
    got = run_scan(to_device(inputs), softplus=True, backend="auto")
    got = (got[0].cpu(), got[1].cpu(), {k: v.cpu() for k, v in got[2].items()})
    assert_close_scan(got, ref, 1e-4, "auto on GPU")
