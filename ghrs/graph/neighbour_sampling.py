"""Neighbour sampling for LightGCN-style propagation on large graphs.

Propagating the whole user-item graph for every training batch costs O(edges) per batch, so an epoch
costs O(edges x batches): quadratic in the data. Training instead propagates over a sampled subgraph
around the batch's nodes (GraphSAGE-style fan-out), with edge weights chosen so that each sampled row is
an unbiased estimate of the full normalised row: a node with degree d <= fanout keeps all its edges, a
node with d > fanout draws ``fanout`` neighbours with replacement and scales their weights by d / fanout.
Per batch the cost is O(seeds x fanout^layers), whatever the size of the graph.

PyG's own ``NeighborSampler`` needs the compiled ``pyg-lib`` / ``torch-sparse`` packages (not installable
on every platform, e.g. this project's CPU images), and it returns the sampled edges without the
estimator weights; the sampler here is plain torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CSRGraph:
    """A symmetric graph in CSR form with LightGCN's symmetric normalisation.

    Attributes:
        rowptr: (n_nodes + 1,) row offsets.
        col: (n_edges,) neighbour of each edge.
        deg: (n_nodes,) degrees.
    """

    rowptr: torch.Tensor
    col: torch.Tensor
    deg: torch.Tensor

    @classmethod
    def from_edge_index(cls, edge_index: torch.Tensor, n_nodes: int) -> CSRGraph:
        """``edge_index`` (2, n_edges) holding both directions of every edge."""
        src, dst = edge_index
        order = torch.argsort(src * n_nodes + dst)
        src, dst = src[order], dst[order]
        deg = torch.bincount(src, minlength=n_nodes)
        rowptr = torch.zeros(n_nodes + 1, dtype=torch.long)
        rowptr[1:] = torch.cumsum(deg, 0)
        return cls(rowptr, dst.contiguous(), deg)

    @property
    def n_nodes(self) -> int:
        return len(self.deg)


def _sample_rows(g: CSRGraph, rows: torch.Tensor, fanout: int, generator: torch.Generator | None):
    """Edges (row, neighbour, weight) estimating the normalised rows ``rows`` (unique node ids)."""
    deg = g.deg[rows]
    rows = rows[deg > 0]
    deg = deg[deg > 0]
    small = deg <= fanout
    # every edge of a low-degree row
    r_s, d_s = rows[small], deg[small]
    starts = torch.repeat_interleave(g.rowptr[r_s], d_s)
    within = torch.arange(len(starts)) - torch.repeat_interleave(torch.cumsum(d_s, 0) - d_s, d_s)
    src_s, nb_s = torch.repeat_interleave(r_s, d_s), g.col[starts + within]
    scale_s = torch.ones(len(src_s))
    # ``fanout`` draws with replacement from a high-degree row, each weighted deg / fanout
    r_l, d_l = rows[~small], deg[~small]
    draw = (torch.rand(len(r_l), fanout, generator=generator) * d_l.unsqueeze(1)).long().clamp_max(d_l.unsqueeze(1) - 1)
    nb_l = g.col[g.rowptr[r_l].unsqueeze(1) + draw].reshape(-1)
    src_l = r_l.repeat_interleave(fanout)
    scale_l = (d_l.float() / fanout).repeat_interleave(fanout)
    src, nb = torch.cat([src_s, src_l]), torch.cat([nb_s, nb_l])
    norm = (g.deg[src].float() * g.deg[nb].float()).rsqrt()
    return src, nb, norm * torch.cat([scale_s, scale_l])


def sample_propagation(
    g: CSRGraph, seeds: torch.Tensor, fanout: int, n_layers: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The subgraph that ``n_layers`` propagation steps need at ``seeds``, with estimator weights.

    Returns ``nodes`` (n_sub,) the global ids of the subgraph (``seeds``, unique and in their sorted order,
    come first) and ``M`` (n_sub, n_sub), a sparse CSR matrix: ``M @ x[nodes]`` estimates ``(A x)[nodes]``
    without bias at every node within ``n_layers - 1`` hops of the seeds, where ``A`` is the symmetric
    normalised adjacency ``D^-1/2 Adj D^-1/2``; so ``M^l @ x[nodes]`` at the seeds is an unbiased
    estimate of ``(A^l x)[seeds]`` for l <= ``n_layers`` (rows are drawn independently). Exact when
    ``fanout`` >= every degree on the way.
    """
    if fanout < 1 or n_layers < 1:
        raise ValueError(f"fanout and n_layers must be >= 1, got {fanout}, {n_layers}")
    seeds = torch.unique(seeds)
    visited = torch.zeros(g.n_nodes, dtype=torch.bool)
    frontier, parts = seeds, []
    for _ in range(n_layers):
        visited[frontier] = True
        src, nb, w = _sample_rows(g, frontier, fanout, generator)
        parts.append((src, nb, w))
        nxt = torch.unique(nb)
        frontier = nxt[~visited[nxt]]
    src = torch.cat([p[0] for p in parts])
    nb = torch.cat([p[1] for p in parts])
    w = torch.cat([p[2] for p in parts])
    others = torch.unique(torch.cat([src, nb]))
    others = others[~torch.isin(others, seeds)]
    nodes = torch.cat([seeds, others])
    local = torch.full((g.n_nodes,), -1, dtype=torch.long)
    local[nodes] = torch.arange(len(nodes))
    n = len(nodes)
    m = torch.sparse_coo_tensor(torch.stack([local[src], local[nb]]), w, (n, n)).coalesce()  # sums repeated draws
    return nodes, m.to_sparse_csr()
