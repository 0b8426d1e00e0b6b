"""Depthwise causal conv1d + SiLU on the CPU: the compiled loops of ``kernels/csrc/causal_conv1d_cpu.c``.

Mamba's conv branch, ``silu(conv(x))``, channels last. :class:`ssm.mamba.CausalConv1d` uses
:func:`causal_conv1d_silu` on CPU float32/float64 tensors when the kernels were built
(:func:`kernels.cpu_lib.available`). The backward recomputes the pre-activation, so nothing but the input
is saved.

Shapes: x (batch, L, dim) with contiguous channels (copied otherwise); weight (dim, K); bias (dim,) or
None; output (batch, L, dim).
"""

from __future__ import annotations

import torch

from kernels.cpu_lib import channels_contiguous, check, kernel, ptr, run_slices, slices, strides_bt

__all__ = ["causal_conv1d_silu"]


class _CausalConv1dSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        check({"x": x, "weight": weight, "bias": bias}, x.dtype)
        x, weight = channels_contiguous(x, 2), weight.contiguous()
        bias = None if bias is None else bias.contiguous()
        batch, length, dim = x.shape
        y = x.new_empty(batch, length, dim)
        fn = kernel("cconv_fwd", x.dtype)

        def call(i: int, b0: int, b1: int) -> None:
            fn(b1 - b0, length, dim, weight.shape[1], ptr(x, b0), *strides_bt(x, 1), ptr(weight), ptr(bias),
               ptr(y, b0))  # fmt: skip

        run_slices(call, slices(batch))
        ctx.save_for_backward(x, weight, bias)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias = ctx.saved_tensors
        dy = channels_contiguous(dy, 2)
        batch, length, dim = x.shape
        parts = slices(batch)
        dx = x.new_empty(batch, length, dim)
        dw = x.new_zeros(len(parts), *weight.shape)  # per thread, summed below
        db = None if bias is None else x.new_zeros(len(parts), dim)
        fn = kernel("cconv_bwd", x.dtype)

        def call(i: int, b0: int, b1: int) -> None:
            fn(b1 - b0, length, dim, weight.shape[1], ptr(x, b0), *strides_bt(x, 1), ptr(weight), ptr(bias),
               ptr(dy, b0), *strides_bt(dy, 1), ptr(dx, b0), ptr(dw[i]), None if db is None else ptr(db[i]))  # fmt: skip

        run_slices(call, parts)
        return dx, dw.sum(0), None if db is None else db.sum(0)


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """silu(depthwise causal conv of x (batch, L, dim) with weight (dim, K) and bias (dim,))."""
    return _CausalConv1dSiLU.apply(x, weight, bias)
