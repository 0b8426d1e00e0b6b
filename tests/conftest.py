"""Shared test set-up.

Triton kernels run on the CPU through Triton's interpreter when no GPU is present; the flag must be
set before any ``@triton.jit`` function is defined, i.e. before ``kernels`` is imported.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
