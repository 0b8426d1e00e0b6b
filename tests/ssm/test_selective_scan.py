"""Selective scan (``ssm.selective_scan``): reference, chunked backend, state update, masks, stability.

The Triton backend is compared against the same reference in ``tests/kernels/test_selective_scan_triton.py``
(which reuses the helpers below).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssm import selective_scan, selective_state_step

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
# the chunked backend's two cores: the compiled C loops (what `auto` runs on CPU) and the torch tiles
CORES = ("compiled", "torch")


@contextlib.contextmanager
def scan_core(core: str):
    """Run the chunked backend on one core (a context manager, so it also works inside hypothesis tests)."""
    cs = importlib.import_module("ssm.chunked_scan")
    saved = cs.COMPILED_CORE
    cs.COMPILED_CORE = core == "compiled"
    try:
        yield
    finally:
        cs.COMPILED_CORE = saved


# --------------------------------------------------------------------------------------------------------
# helpers (also imported by the Triton tests)
# --------------------------------------------------------------------------------------------------------


def make_inputs(
    batch: int,
    dim: int,
    length: int,
    d_state: int,
    groups: int | None,
    *,
    has_D: bool = True,
    has_z: bool = True,
    has_bias: bool = True,
    softplus: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor | None]:
    """Random scan inputs; ``groups=None`` gives 3-D B/C, an int the grouped 4-D form."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    bc_shape = (batch, d_state, length) if groups is None else (batch, groups, d_state, length)
    # without softplus delta is used as is: keep it positive, as a step size is
    delta = (
        randn(batch, dim, length)
        if softplus
        else 0.05 + torch.rand(batch, dim, length, generator=g).to(dtype)
    )
    return {
        "u": randn(batch, dim, length),
        "delta": delta,
        "A": -torch.exp(0.5 * randn(dim, d_state)),
        "B": randn(*bc_shape),
        "C": randn(*bc_shape),
        "D": randn(dim) if has_D else None,
        "z": randn(batch, dim, length) if has_z else None,
        "delta_bias": 0.5 * randn(dim) if has_bias else None,
    }


def run_scan(inputs, *, softplus, backend, mask=None, grads=True, seed=123, **kw):
    """Scan + backward of a random linear function of (y, last_state).

    Returns (y, last_state, {name: grad}); grads for absent inputs are omitted.
    """
    leaves = {
        k: (v.detach().clone().requires_grad_(grads) if v is not None else None) for k, v in inputs.items()
    }
    y, last = selective_scan(
        **leaves,  # keys are selective_scan's argument names
        delta_softplus=softplus,
        return_last_state=True,
        backend=backend,
        mask=mask,
        **kw,
    )
    out = {}
    if grads:
        g = torch.Generator().manual_seed(seed)
        wy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.device, y.dtype)
        ws = torch.randn(last.shape, generator=g, dtype=torch.float64).to(last.device, last.dtype)
        ((y * wy).sum() + (last * ws).sum()).backward()
        out = {k: v.grad for k, v in leaves.items() if v is not None}
    return y.detach(), last.detach(), out


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| relative to max |ref| (0 when both are 0)."""
    ref = ref.double()
    scale = ref.abs().max().item() if ref.numel() else 0.0
    diff = (got.double() - ref).abs().max().item() if ref.numel() else 0.0
    return diff / scale if scale > 0 else diff


def assert_close_scan(got, ref, tol: float, what: str = "") -> None:
    y, last, grads = got
    y_ref, last_ref, grads_ref = ref
    assert y.dtype == y_ref.dtype or what, "output dtype"
    errs = {"y": rel_err(y, y_ref), "last_state": rel_err(last, last_ref)}
    for k in grads_ref:
        errs["d" + k] = rel_err(grads[k], grads_ref[k])
    bad = {k: v for k, v in errs.items() if not v < tol}
    assert not bad, f"{what} relative errors above {tol}: {bad}"


def random_mask(batch: int, length: int, kind: str, seed: int) -> torch.Tensor | None:
    """(batch, length) bool mask: 'none', 'right' / 'left' padding (>= 1 real step) or 'holes'."""
    if kind == "none":
        return None
    g = torch.Generator().manual_seed(seed)
    if kind == "holes":
        return torch.rand(batch, length, generator=g) > 0.3
    lens = torch.randint(1, length + 1, (batch,), generator=g)
    pos = torch.arange(length)[None, :]
    return pos < lens[:, None] if kind == "right" else pos >= (length - lens)[:, None]


@st.composite
def scan_configs(draw, max_dim: int = 20, max_len: int = 40, max_state: int = 8):
    batch = draw(st.integers(1, 2))
    length = draw(st.one_of(st.just(1), st.integers(1, max_len)))
    d_state = draw(st.integers(1, max_state))
    groups = draw(st.sampled_from([None, 1, 2, 3]))
    per = draw(st.integers(1, max(1, max_dim // (groups or 1))))
    dim = per * (groups or 1)
    return {
        "batch": batch,
        "dim": dim,
        "length": length,
        "d_state": d_state,
        "groups": groups,
        "has_D": draw(st.booleans()),
        "has_z": draw(st.booleans()),
        "has_bias": draw(st.booleans()),
        "softplus": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
        "mask": draw(st.sampled_from(["none", "none", "right", "left", "holes"])),
    }


def split_config(cfg: dict) -> tuple[dict, bool, str]:
    cfg = dict(cfg)
    mask_kind = cfg.pop("mask")
    return cfg, cfg["softplus"], mask_kind


# --------------------------------------------------------------------------------------------------------
# chunked vs reference, reference fp32 vs fp64
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("core", CORES)
@settings(max_examples=60, deadline=None)
@given(cfg=scan_configs(), chunk=st.one_of(st.none(), st.integers(1, 16)))
def test_chunked_matches_reference(core, cfg, chunk):
    cfg, softplus, mask_kind = split_config(cfg)
    inputs = make_inputs(**cfg)
    mask = random_mask(cfg["batch"], cfg["length"], mask_kind, cfg["seed"])
    ref = run_scan(inputs, softplus=softplus, backend="reference", mask=mask)
    with scan_core(core):
        got = run_scan(inputs, softplus=softplus, backend="chunked", mask=mask, chunk_size=chunk)
    # 1e-4: d(delta_bias) sums ddelta over steps with cancellation; both fp32 orders then differ by ~1e-5
    # (hypothesis found 1.6e-5, with chunked the closer one to float64: 1.6e-5 vs the loop's 3.2e-5)
    assert_close_scan(got, ref, 1e-4, f"chunked(chunk={chunk}) {cfg} mask={mask_kind}")


@settings(max_examples=30, deadline=None)
@given(cfg=scan_configs())
def test_reference_float32_matches_float64(cfg):
    cfg, softplus, mask_kind = split_config(cfg)
    mask = random_mask(cfg["batch"], cfg["length"], mask_kind, cfg["seed"])
    ref64 = run_scan(
        make_inputs(**cfg, dtype=torch.float64), softplus=softplus, backend="reference", mask=mask
    )
    got32 = run_scan(make_inputs(**cfg), softplus=softplus, backend="reference", mask=mask)
    assert got32[0].dtype == torch.float32 and ref64[0].dtype == torch.float64
    # fp32 rounding of a sum whose terms cancel reaches ~1e-5 of max|y| (hypothesis found one at 1.09e-5)
    assert_close_scan(got32, ref64, 1e-4, f"reference fp32 vs fp64 {cfg}")


@pytest.mark.parametrize("core", CORES)
def test_chunked_wide_steps_match_reference(core):
    """The encoder-like regime (many state elements per step, several batch tiles) matches the loop."""
    inputs = make_inputs(4, 256, 3, 64, None, seed=2)  # 65,536 state elements per step
    ref = run_scan(inputs, softplus=True, backend="reference")
    with scan_core(core):
        got = run_scan(inputs, softplus=True, backend="chunked", chunk_size=2)
    assert_close_scan(got, ref, 1e-5, "wide")


@settings(max_examples=40, deadline=None)
@given(
    cfg=scan_configs(),
    tile=st.sampled_from([(4, 2), (8, 16), (64, 4)]),
    use_lengths=st.booleans(),
)
def test_chunked_batch_tiles_and_lengths_match_reference(cfg, tile, use_lengths):
    """Small cache tiles force several batch slices and chunks per call (the large-batch schedule)."""
    cs = importlib.import_module("ssm.chunked_scan")
    cfg, softplus, mask_kind = split_config(cfg)
    inputs = make_inputs(**cfg)
    kw = {}
    if use_lengths:
        g = torch.Generator().manual_seed(cfg["seed"])
        kw["lengths"] = torch.randint(0, cfg["length"] + 1, (cfg["batch"],), generator=g)
    else:
        kw["mask"] = random_mask(cfg["batch"], cfg["length"], mask_kind, cfg["seed"])
    ref = run_scan(inputs, softplus=softplus, backend="reference", **kw)
    saved = cs.TILE_ELEMENTS, cs.STEP_ELEMENTS
    cs.TILE_ELEMENTS, cs.STEP_ELEMENTS = tile
    try:
        with scan_core("torch"):  # the tiles are the torch core's schedule
            got = run_scan(inputs, softplus=softplus, backend="chunked", **kw)
    finally:
        cs.TILE_ELEMENTS, cs.STEP_ELEMENTS = saved
    assert_close_scan(got, ref, 1e-4, f"chunked tiles={tile} {cfg} {kw}")


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("length", [64, 256])
def test_chunked_saves_no_per_step_states(core, length):
    """Autograd keeps O(batch * dim * length) values (inputs, chunk checkpoints), not the per-step states
    (batch * dim * d_state * length) that the reference loop keeps."""
    batch, dim, d_state = 2, 16, 16
    inputs = {
        k: (v.requires_grad_() if v is not None else None)
        for k, v in make_inputs(batch, dim, length, d_state, None, seed=1).items()
    }
    per_step_states = batch * dim * d_state * length

    def saved_elements(backend):
        total = []

        def pack(t):
            total.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            selective_scan(**inputs, delta_softplus=True, backend=backend, chunk_size=16)
        return sum(total)

    assert saved_elements("reference") > per_step_states
    # u, delta, z, pre-gate output (4 x b*dim*L), B, C, and length/16 + 1 checkpoints of b*dim*d_state
    with scan_core(core):
        assert saved_elements("chunked") < 0.5 * per_step_states


def test_compiled_cpu_kernels_are_built_and_used_by_auto():
    """The project's install builds the C kernels; `auto` on CPU runs the chunked backend on them."""
    from kernels import cpu_lib
    from ssm.chunked_scan import use_compiled_core

    assert cpu_lib.available(), "kernels._cpu_kernels was not built: reinstall with `pip install -e .`"
    assert use_compiled_core(torch.zeros(1)) and use_compiled_core(torch.zeros(1, dtype=torch.float64))
    assert not use_compiled_core(torch.zeros(1, dtype=torch.float16))  # half inputs are cast to float32 first


@pytest.mark.parametrize("threads", [1, 3])
def test_compiled_core_batch_split_over_threads_is_exact(threads):
    """Batch slices run in parallel threads; per-thread dA/dD partial sums give the same gradients."""
    inputs = make_inputs(5, 8, 23, 4, 2, seed=4)
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    one = run_scan(inputs, softplus=True, backend="chunked", chunk_size=7)
    torch.set_num_threads(threads)
    try:
        many = run_scan(inputs, softplus=True, backend="chunked", chunk_size=7)
    finally:
        torch.set_num_threads(saved)
    assert_close_scan(many, one, 1e-6, f"{threads} threads")


def test_auto_on_cpu_is_chunked():
    inputs = make_inputs(2, 5, 17, 3, None)
    y_auto = selective_scan(*[inputs[k] for k in ("u", "delta", "A", "B", "C")], backend="auto")
    y_chunk = selective_scan(*[inputs[k] for k in ("u", "delta", "A", "B", "C")], backend="chunked")
    assert torch.equal(y_auto, y_chunk)


@pytest.mark.parametrize("backend", ["reference", "chunked", "chunked-torch"])
@pytest.mark.parametrize("groups", [None, 2])
def test_gradcheck_float64(backend, groups):
    core, backend = ("torch", "chunked") if backend == "chunked-torch" else ("compiled", backend)
    inputs = make_inputs(2, 4, 6, 3, groups, dtype=torch.float64, seed=3)
    names = [k for k in GRAD_NAMES if inputs[k] is not None]
    mask = torch.tensor([[True] * 6, [False, False, True, True, True, False]])

    def fn(*args):
        y, last = selective_scan(
            **dict(zip(names, args)),
            delta_softplus=True,
            return_last_state=True,
            backend=backend,
            mask=mask,
            **({"chunk_size": 4} if backend == "chunked" else {}),
        )
        return y, last

    args = [inputs[k].clone().requires_grad_() for k in names]
    with scan_core(core):
        assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------------------------------------
# streaming state update
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [None, 1, 3])
@pytest.mark.parametrize("options", [{}, {"D": True, "z": True, "bias": True, "softplus": True}])
def test_state_update_equals_scan(groups, options):
    batch, dim, length, d_state = 2, 6, 11, 4
    inputs = make_inputs(
        batch,
        dim,
        length,
        d_state,
        groups,
        has_D=bool(options.get("D")),
        has_z=bool(options.get("z")),
        has_bias=bool(options.get("bias")),
        softplus=bool(options.get("softplus")),
        seed=5,
    )
    softplus = bool(options.get("softplus"))
    y_ref, last_ref, _ = run_scan(inputs, softplus=softplus, backend="reference", grads=False)
    state = torch.zeros(batch, dim, d_state)
    ys = []
    for t in range(length):
        before = state.clone()
        y_t, new_state = selective_state_step(
            state,
            inputs["u"][..., t],
            inputs["delta"][..., t],
            inputs["A"],
            inputs["B"][..., t],
            inputs["C"][..., t],
            D=inputs["D"],
            z_t=inputs["z"][..., t] if inputs["z"] is not None else None,
            delta_bias=inputs["delta_bias"],
            delta_softplus=softplus,
        )
        assert torch.equal(state, before), "the input state must not be modified"
        assert y_t.shape == (batch, dim) and new_state.shape == (batch, dim, d_state)
        ys.append(y_t)
        state = new_state
    assert rel_err(torch.stack(ys, dim=-1), y_ref) < 1e-6
    assert rel_err(state, last_ref) < 1e-6


def test_state_update_bf16_inputs():
    inputs = make_inputs(1, 4, 1, 3, None, dtype=torch.bfloat16)
    y, state = selective_state_step(
        torch.zeros(1, 4, 3),
        inputs["u"][..., 0],
        inputs["delta"][..., 0],
        inputs["A"],
        inputs["B"][..., 0],
        inputs["C"][..., 0],
        D=inputs["D"],
        z_t=inputs["z"][..., 0],
        delta_bias=inputs["delta_bias"],
        delta_softplus=True,
    )
    assert y.dtype == torch.bfloat16 and state.dtype == torch.float32


# --------------------------------------------------------------------------------------------------------
# padding masks
# --------------------------------------------------------------------------------------------------------


def check_padding_invariance(backend: str, device: str = "cpu", **kw) -> None:
    """Left and right padding leave the real outputs and the final state equal to the unpadded scan."""
    dim, d_state, real_len, pad = 5, 4, 9, 4
    inputs = make_inputs(1, dim, real_len + pad, d_state, 1, seed=11)
    # the unpadded sequence is the first real_len steps of every input
    trimmed = {k: (v[..., :real_len] if v is not None and v.dim() >= 3 else v) for k, v in inputs.items()}
    y_ref, last_ref, _ = run_scan(trimmed, softplus=True, backend="reference", grads=False)
    for side in ("right", "left"):
        padded = {}
        for k, v in inputs.items():
            if v is not None and v.dim() >= 3:
                # garbage values (finite) at the padded steps
                junk = 7.0 * torch.ones_like(v[..., :pad])
                padded[k] = torch.cat(
                    [v[..., :real_len], junk] if side == "right" else [junk, v[..., :real_len]], -1
                )
            else:
                padded[k] = v
        real = torch.zeros(1, real_len + pad, dtype=torch.bool)
        sl = slice(0, real_len) if side == "right" else slice(pad, pad + real_len)
        real[:, sl] = True
        padded = {k: (v.to(device) if v is not None else None) for k, v in padded.items()}
        y, last, grads = run_scan(padded, softplus=True, backend=backend, mask=real.to(device), **kw)
        y, last, grads = y.cpu(), last.cpu(), {k: v.cpu() for k, v in grads.items()}
        assert rel_err(y[..., sl], y_ref) < 1e-5, side
        assert rel_err(last, last_ref) < 1e-5, side
        assert torch.all(y[..., ~real[0]] == 0), f"{side}: padded outputs must be 0"
        for name in ("u", "delta", "z", "B", "C"):  # padded steps get no gradient
            assert torch.all(grads[name][..., ~real[0]] == 0), f"{side}: d{name} at padded steps"
        if side == "right" and "chunk_size" not in kw:
            y_len, last_len, _ = run_scan(
                padded, softplus=True, backend=backend, lengths=torch.tensor([real_len]), grads=False
            )
            assert torch.equal(y_len.cpu(), y) and torch.equal(last_len.cpu(), last)


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_padding_mask_left_and_right(backend):
    check_padding_invariance(backend)


@pytest.mark.parametrize("core", CORES)
def test_padding_mask_chunk_boundaries(core):
    with scan_core(core):
        check_padding_invariance("chunked", chunk_size=3)


# --------------------------------------------------------------------------------------------------------
# numerical stability
# --------------------------------------------------------------------------------------------------------


def large_decay_inputs(length: int, dim: int = 3, d_state: int = 4) -> dict:
    """delta ~ 50 and A ~ -50: exp(delta * A) ~ exp(-2500) underflows to 0 every step."""
    inputs = make_inputs(1, dim, length, d_state, None, has_bias=False, softplus=False, seed=7)
    inputs["delta"] = 40.0 + 20.0 * torch.rand(1, dim, length, generator=torch.Generator().manual_seed(1))
    inputs["A"] = -(40.0 + 20.0 * torch.rand(dim, d_state, generator=torch.Generator().manual_seed(2)))
    inputs["A"][0, 0] = -1e-3  # one slow mode as well
    return inputs


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("chunk", [None, 5])
def test_large_delta_times_A_is_stable(core, chunk):
    inputs = large_decay_inputs(37)
    ref = run_scan(inputs, softplus=False, backend="reference")
    with scan_core(core):
        got = run_scan(inputs, softplus=False, backend="chunked", chunk_size=chunk)
    for part in (got[0], got[1], *got[2].values()):
        assert torch.isfinite(part).all()
    assert_close_scan(got, ref, 1e-5, "large delta*|A|")


@pytest.mark.parametrize("core", CORES)
def test_long_sequence_chunked_is_finite_and_matches_reference(core):
    length = 100_000
    g = torch.Generator().manual_seed(0)
    inputs = make_inputs(1, 2, length, 4, None, seed=0)
    inputs["A"] = -torch.rand(2, 4, generator=g) * 0.05  # slow decays: the state carries over long spans
    with scan_core(core):
        y, last, grads = run_scan(inputs, softplus=True, backend="chunked")
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    assert all(torch.isfinite(v).all() for v in grads.values())
    with torch.no_grad():  # the sequential reference, forward only (~a few seconds)
        y_ref, last_ref, _ = run_scan(inputs, softplus=True, backend="reference", grads=False)
    assert rel_err(y, y_ref) < 1e-5 and rel_err(last, last_ref) < 1e-5


# --------------------------------------------------------------------------------------------------------
# dtypes and validation
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_half_inputs_accumulate_in_float32(dtype, backend):
    inputs = make_inputs(2, 6, 19, 4, 2, dtype=dtype, seed=9)
    y, last = selective_scan(
        inputs["u"],
        inputs["delta"],
        inputs["A"],
        inputs["B"],
        inputs["C"],
        D=inputs["D"],
        z=inputs["z"],
        delta_bias=inputs["delta_bias"],
        delta_softplus=True,
        return_last_state=True,
        backend=backend,
    )
    assert y.dtype == dtype and last.dtype == torch.float32
    y32, _, _ = run_scan(
        {k: v.float() for k, v in inputs.items()}, softplus=True, backend="reference", grads=False
    )
    # only the final rounding to the half type differs from the fp32 computation on the same values
    assert rel_err(y.float(), y32) < 1e-2


def _base_args():
    i = make_inputs(2, 4, 5, 3, None)
    return [i["u"], i["delta"], i["A"], i["B"], i["C"]]


@pytest.mark.parametrize(
    "change, name",
    [
        (lambda a, kw: a.__setitem__(1, a[1][..., :4]), "delta"),
        (lambda a, kw: a.__setitem__(2, a[2][:3]), "A"),
        (lambda a, kw: a.__setitem__(2, a[2].to(torch.complex64)), "A"),
        (lambda a, kw: a.__setitem__(3, a[3][:, :2]), "B"),
        (lambda a, kw: a.__setitem__(4, torch.randn(2, 3, 3, 5)), "C"),  # 3 groups do not divide dim=4
        (lambda a, kw: a.__setitem__(0, a[0].long()), "u"),
        (lambda a, kw: kw.update(D=torch.randn(5)), "D"),
        (lambda a, kw: kw.update(z=torch.randn(2, 4, 4)), "z"),
        (lambda a, kw: kw.update(delta_bias=torch.randn(4, 1)), "delta_bias"),
        (lambda a, kw: kw.update(mask=torch.ones(2, 5)), "mask"),
        (lambda a, kw: kw.update(mask=torch.ones(2, 4, dtype=torch.bool)), "mask"),
        (lambda a, kw: kw.update(lengths=torch.tensor([5, 6])), "lengths"),
        (lambda a, kw: kw.update(backend="cuda"), "backend"),
    ],
)
def test_invalid_inputs_raise_value_error_naming_the_argument(change, name):
    args, kw = _base_args(), {}
    change(args, kw)
    with pytest.raises(ValueError, match=name):
        selective_scan(*args, **kw)


def test_state_update_validation():
    with pytest.raises(ValueError, match="B"):
        selective_state_step(
            torch.zeros(2, 4, 3),
            torch.randn(2, 4),
            torch.rand(2, 4),
            -torch.rand(4, 3),
            torch.randn(2, 5),
            torch.randn(2, 3),
        )
    with pytest.raises(ValueError, match="x"):
        selective_state_step(
            torch.zeros(2, 4, 3),
            torch.randn(2, 5),
            torch.rand(2, 4),
            -torch.rand(4, 3),
            torch.randn(2, 3),
            torch.randn(2, 3),
        )


def test_packages_do_not_import_ghrs():
    code = (
        "import sys, ssm, ssm.selective_scan, kernels.selective_scan_triton\n"
        "bad = [m for m in sys.modules if m == 'ghrs' or m.startswith('ghrs.')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"TRITON_INTERPRET": "1", **os.environ})
