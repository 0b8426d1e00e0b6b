"""Row-wise operations on (nested) encoder stream states, whose tensor leaves are batch-first
(:class:`ssm.encoders.StreamState`): the hybrid selects, grows and writes users' rows of them."""

from __future__ import annotations

import torch

__all__ = ["grown", "is_batched", "map_states", "select_rows", "write_rows"]


def map_states(fn, *states):
    """Apply ``fn`` to matching tensors of (nested) encoder stream states; other leaves from the first."""
    first = states[0]
    if isinstance(first, torch.Tensor):
        return fn(*states)
    if isinstance(first, (tuple, list)):
        parts = [map_states(fn, *children) for children in zip(*states)]
        return type(first)(*parts) if hasattr(first, "_fields") else type(first)(parts)
    return first


def is_batched(x: torch.Tensor) -> bool:
    return x.dim() > 0


def grown(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x`` (m, ...) with zero rows appended up to n rows."""
    return torch.cat([x, x.new_zeros(n - len(x), *x.shape[1:])]) if n > len(x) else x


def select_rows(state, rows: slice):
    """Rows ``rows`` of a batched stream state (views)."""
    return map_states(lambda x: x[rows] if is_batched(x) else x, state)


def write_rows(state, new, rows: slice) -> None:
    """Write the rows of ``new`` into rows ``rows`` of the batched stream state ``state``, in place."""
    map_states(lambda full, part: full[rows].copy_(part) if is_batched(full) else full, state, new)
