"""Agreement graphs between users (or items) built with sparse matrix products.

GHRS step 1: users ``u`` and ``v`` are linked when they gave *the same rating to the same item* at least
``alpha * n_items`` times. With one user x item indicator matrix ``M_r`` per rating value ``r``, the
co-agreement counts are ``C = sum_r M_r @ M_r.T``; no loop over user pairs is needed. The product is
formed a block of rows at a time so that memory stays bounded on dense graphs (a full-size synthetic
ML-1M gives a user x user count matrix that is ~100% non-zero).

The same code builds an item graph (rows = items, columns = users) and the edges between cold users
and training users (rows of one table against the rows of another).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

log = logging.getLogger(__name__)

# Rows per block of the count product; the block's count matrix has at most block * n_rows entries.
DEFAULT_BLOCK = 1024


@dataclass
class SimilarityGraph:
    """An undirected, unweighted graph on ``n_nodes`` indices (users or items).

    Attributes:
        adjacency: (n_nodes, n_nodes) symmetric CSR matrix of int8 ones, zero diagonal.
        threshold: the minimum agreement count of an edge.
        max_degree: None, or the number of strongest edges (by agreement count) each node keeps; the
            graph is the union of every node's kept edges, so it has at most ``n_nodes * max_degree``.
        block: rows per block of the count product (memory bound, see :func:`agreement_blocks`).
    """

    adjacency: sp.csr_matrix
    threshold: float
    max_degree: int | None = None
    block: int = DEFAULT_BLOCK

    @property
    def n_nodes(self) -> int:
        return self.adjacency.shape[0]

    @property
    def n_edges(self) -> int:
        return int(self.adjacency.nnz // 2)

    @property
    def degree(self) -> np.ndarray:
        return np.diff(self.adjacency.indptr)

    @property
    def nodes(self) -> np.ndarray:
        """Indices with at least one edge (the nodes of the graph; isolated indices are not in it)."""
        return np.flatnonzero(self.degree > 0)

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Each undirected edge once, as ``(u, v)`` arrays with ``u < v``."""
        upper = sp.triu(self.adjacency, k=1).tocoo()
        return upper.row.astype(np.int64), upper.col.astype(np.int64)

    def summary(self) -> str:
        n = len(self.nodes)
        density = 2 * self.n_edges / max(1, n * (n - 1))
        return f"{n:,} nodes (of {self.n_nodes:,}), {self.n_edges:,} edges, density {density:.4f}, threshold {self.threshold:g}"


def indicator_matrices(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n_cols: int, same_value: bool = True
) -> list[sp.csr_matrix]:
    """One (n_rows, n_cols) 0/1 CSR matrix per distinct value (or a single one if ``same_value`` is False)."""
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    if not same_value:
        groups = [np.ones(len(rows), bool)]
    else:
        values = np.asarray(values)
        groups = [values == v for v in np.unique(values)]
    out = []
    for mask in groups:
        m = sp.csr_matrix(
            (np.ones(int(mask.sum()), np.float32), (rows[mask], cols[mask])), shape=(n_rows, n_cols)
        )
        m.sum_duplicates()
        m.data[:] = 1.0  # duplicate (row, col) pairs count once
        out.append(m)
    return out


def agreement_blocks(
    left: list[sp.csr_matrix],
    right: list[sp.csr_matrix],
    rows: np.ndarray,
    block: int = DEFAULT_BLOCK,
    with_corated: bool = False,
):
    """Yield ``(sel, agree, corated)`` per block of ``rows``: ``sel`` the row indices, ``agree`` the
    (len(sel), n_right) CSR counts ``sum_r left_r[sel] @ right_r.T`` and, if asked, ``corated`` the
    counts of columns both rows have any value in (else None)."""
    right_t = [r.T.tocsc() for r in right]
    any_left = any_right_t = None
    if with_corated:
        any_left = sum(left[1:], left[0]).tocsr()
        any_right_t = sum(right[1:], right[0]).T.tocsc()
    for start in range(0, len(rows), block):
        sel = rows[start : start + block]
        agree = None
        for lm, rt in zip(left, right_t):
            prod = lm[sel] @ rt
            agree = prod if agree is None else agree + prod
        corated = (any_left[sel] @ any_right_t).tocsr() if with_corated else None
        yield sel, agree.tocsr(), corated


def agreement_edges(
    left: list[sp.csr_matrix],
    right: list[sp.csr_matrix],
    threshold: float,
    left_rows: np.ndarray | None = None,
    block: int = DEFAULT_BLOCK,
    max_degree: int | None = None,
    exclude_self: bool = False,
) -> sp.csr_matrix:
    """Pairs (a, b) with ``sum_r left_r[a] . right_r[b] >= threshold`` as a 0/1 int8 CSR matrix.

    ``max_degree``: keep only each row's ``max_degree`` largest counts (ties: lower column first), so
    the result has at most ``len(rows) * max_degree`` entries whatever the density; the count product
    itself is formed ``block`` rows at a time, so peak memory is about ``block * n_right`` counts plus
    the kept edges. ``exclude_self``: ignore the diagonal (a row agreeing with itself) before pruning.

    ``left`` and ``right`` are lists of indicator matrices over the same value set and columns
    (``right`` may be ``left``). Only the rows ``left_rows`` of ``left`` are evaluated (default: all);
    other rows stay empty. At least one agreement is always required (``threshold`` <= 1 means >= 1).
    """
    n_left, n_right = left[0].shape[0], right[0].shape[0]
    thr = max(float(threshold), 1.0)
    rows = np.arange(n_left) if left_rows is None else np.unique(np.asarray(left_rows, np.int64))
    parts_r, parts_c = [], []
    if max_degree is not None and max_degree < 1:
        raise ValueError(f"max_degree must be >= 1 or None, got {max_degree}")
    # Exact pruning: a count never exceeds either row's number of entries, so rows with fewer than the
    # threshold cannot link; dropping them first shrinks the product (on MovieLens-like data most users).
    rows = rows[_row_totals(left)[rows] >= thr - 1e-9]
    right = restrict_rows(right, np.flatnonzero(_row_totals(right) >= thr - 1e-9))
    for sel, counts, _ in agreement_blocks(left, right, rows, block):
        counts = counts.tocoo()
        keep = counts.data >= thr - 1e-9
        if exclude_self:
            keep &= sel[counts.row] != counts.col
        row, col, _ = _top_per_row(counts.row[keep], counts.col[keep].astype(np.int64), counts.data[keep], max_degree)
        parts_r.append(sel[row])
        parts_c.append(col)
    r = np.concatenate(parts_r) if parts_r else np.empty(0, np.int64)
    c = np.concatenate(parts_c) if parts_c else np.empty(0, np.int64)
    return sp.csr_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n_left, n_right))


def agreement_neighbours(
    left: list[sp.csr_matrix],
    right: list[sp.csr_matrix],
    k: int,
    shrink: float = 10.0,
    left_rows: np.ndarray | None = None,
    exclude_self: bool = True,
    block: int = DEFAULT_BLOCK,
    right_rows: np.ndarray | None = None,
) -> sp.csr_matrix:
    """Each row's ``k`` most similar rows of ``right`` by shrunk agreement rate.

    ``rate(a, b) = agree(a, b) / (corated(a, b) + shrink)``: the share of co-rated columns on which a
    and b gave the same value (GHRS's edge criterion as a weight), pulled towards 0 for small
    overlaps. Returns an (n_left, n_right) CSR of rates with at most ``k`` entries per row (ties: lower
    column first). Sparse throughout: the cost follows the non-zeros of the co-rating product, never
    ``n_left * n_right``. ``right_rows``: the candidate neighbours (default: every row of ``right``); a
    bounded pool makes the cost linear in the rows of ``left`` on data where nearly all pairs co-rate.
    """
    n_left, n_right = left[0].shape[0], right[0].shape[0]
    if right_rows is not None:
        right = restrict_rows(right, right_rows)
    rows = np.arange(n_left) if left_rows is None else np.unique(np.asarray(left_rows, np.int64))
    n_cols = left[0].shape[1]
    parts_r, parts_c, parts_v = [], [], []
    for sel, agree, corated in agreement_blocks(left, right, rows, block, with_corated=True):
        # agree's pattern lies inside corated's: pack both counts into one matrix to align them.
        packed = (agree.astype(np.int64) * (n_cols + 1) + corated.astype(np.int64)).tocoo()
        a, co = np.divmod(packed.data, n_cols + 1)
        keep = a > 0
        if exclude_self:
            keep &= sel[packed.row] != packed.col
        row, col = packed.row[keep], packed.col[keep].astype(np.int64)
        rate = a[keep] / (co[keep] + shrink)
        row, col, rate = _top_per_row(row, col, rate, k)
        parts_r.append(sel[row])
        parts_c.append(col)
        parts_v.append(rate)
    r = np.concatenate(parts_r) if parts_r else np.empty(0, np.int64)
    c = np.concatenate(parts_c) if parts_c else np.empty(0, np.int64)
    v = np.concatenate(parts_v) if parts_v else np.empty(0)
    return sp.csr_matrix((v, (r, c)), shape=(n_left, n_right))


def _row_totals(mats: list[sp.csr_matrix]) -> np.ndarray:
    """Entries per row summed over the indicator matrices, shape (n_rows,)."""
    return sum(np.diff(m.tocsr().indptr) for m in mats)


def restrict_rows(mats: list[sp.csr_matrix], rows: np.ndarray) -> list[sp.csr_matrix]:
    """The matrices with every row outside ``rows`` emptied (same shapes)."""
    keep = np.zeros(mats[0].shape[0], np.float32)
    keep[np.asarray(rows, np.int64)] = 1.0
    if keep.all():
        return mats
    return [(sp.diags(keep) @ m).tocsr() for m in mats]


def _top_per_row(row: np.ndarray, col: np.ndarray, val: np.ndarray, k: int | None):
    """The ``k`` largest values of each row of a COO triplet (ties: lower column first); all if None."""
    if k is None or not len(row):
        return row, col, val
    order = np.lexsort((col, -val, row))  # by row, then value descending, then column
    row, col, val = row[order], col[order], val[order]
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    rank = np.arange(len(row)) - np.repeat(starts, np.diff(np.r_[starts, len(row)]))
    top = rank < k
    return row[top], col[top], val[top]


def build_agreement_graph(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    n_rows: int,
    n_cols: int,
    threshold: float,
    same_value: bool = True,
    block: int = DEFAULT_BLOCK,
    max_degree: int | None = None,
) -> SimilarityGraph:
    """Graph on ``n_rows`` nodes: rows a, b linked when they agree on at least ``threshold`` columns.

    Agreement = same column with the same value (``same_value=True``, GHRS) or just the same column
    (co-rating graph). ``max_degree``: each node keeps its strongest ``max_degree`` links (the graph is
    their union), which bounds the edges by ``n_rows * max_degree`` on dense data.
    """
    mats = indicator_matrices(rows, cols, values, n_rows, n_cols, same_value)
    active = np.unique(np.asarray(rows, np.int64))
    adj = agreement_edges(mats, mats, threshold, left_rows=active, block=block, max_degree=max_degree,
                          exclude_self=True)
    adj.setdiag(0)
    adj.eliminate_zeros()
    adj = ((adj + adj.T) > 0).astype(np.int8).tocsr()  # symmetric (the union of kept links)
    adj.sort_indices()
    return SimilarityGraph(adj, float(threshold), max_degree, block)


def user_similarity_graph(
    ratings: pd.DataFrame, n_users: int, n_items: int, alpha: float, block: int = DEFAULT_BLOCK,
    max_degree: int | None = None,
) -> SimilarityGraph:
    """GHRS user graph from a ratings table (columns user, item, rating): threshold ``alpha * n_items``."""
    if alpha < 0:
        raise ValueError(f"ghrs alpha must be >= 0, got {alpha}")
    return build_agreement_graph(
        ratings["user"].to_numpy(), ratings["item"].to_numpy(), ratings["rating"].to_numpy(),
        n_users, n_items, alpha * n_items, same_value=True, block=block, max_degree=max_degree,
    )


def item_similarity_graph(
    ratings: pd.DataFrame, n_users: int, n_items: int, alpha: float, same_rating: bool = False,
    block: int = DEFAULT_BLOCK,
) -> SimilarityGraph:
    """Item graph: items linked when at least ``alpha * n_users`` users rated both (the same way when
    ``same_value``)."""
    if alpha < 0:
        raise ValueError(f"ghrs item_alpha must be >= 0, got {alpha}")
    return build_agreement_graph(
        ratings["item"].to_numpy(), ratings["user"].to_numpy(), ratings["rating"].to_numpy(),
        n_items, n_users, alpha * n_users, same_value=same_rating, block=block,
    )


def rating_indicators(
    table: pd.DataFrame, values: np.ndarray, n_users: int, n_items: int, transpose: bool = False
) -> list[sp.csr_matrix]:
    """User x item 0/1 matrices of ``table`` (columns user, item, rating), one per value of ``values``
    (item x user with ``transpose``)."""
    u, i, r = table["user"].to_numpy(), table["item"].to_numpy(), table["rating"].to_numpy()
    rows, cols, shape = (i, u, (n_items, n_users)) if transpose else (u, i, (n_users, n_items))
    out = []
    for v in values:
        m = r == v
        out.append(sp.csr_matrix((np.ones(int(m.sum()), np.float32), (rows[m], cols[m])), shape=shape))
    return out


def extend_with_new_users(
    graph: SimilarityGraph,
    train: pd.DataFrame,
    new: pd.DataFrame,
    n_users: int,
    n_items: int,
) -> SimilarityGraph:
    """The training graph plus edges between users in ``new`` and the *training* users.

    Each new user is linked to training user ``v`` when their agreement count over the new user's
    ratings reaches the training graph's threshold; new users are never linked to each other, and the
    edges among training users are unchanged. ``n_users`` may exceed the training graph's size (users
    added after fit).
    """
    values = np.union1d(np.unique(train["rating"].to_numpy()), np.unique(new["rating"].to_numpy()))
    new_users = np.unique(new["user"].to_numpy())
    cross = agreement_edges(
        rating_indicators(new, values, n_users, n_items), rating_indicators(train, values, n_users, n_items),
        graph.threshold, left_rows=new_users, block=graph.block, max_degree=graph.max_degree,
    )
    base = graph.adjacency
    if base.shape[0] < n_users:
        pad = n_users - base.shape[0]
        base = sp.block_diag([base, sp.csr_matrix((pad, pad), dtype=np.int8)], format="csr")
    cross.setdiag(0)
    cross.eliminate_zeros()
    adj = ((base + cross + cross.T) > 0).astype(np.int8).tocsr()
    adj.sort_indices()
    return SimilarityGraph(adj, graph.threshold, graph.max_degree, graph.block)
