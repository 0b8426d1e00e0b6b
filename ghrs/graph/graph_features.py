"""GHRS step 2: per-node graph features (PageRank, degree, closeness, betweenness, load, average
neighbour degree).

Two engines compute the same numbers (tests check they agree with networkx on small graphs):

- ``engine="networkx"``: the networkx functions themselves (``nx.pagerank``, ``nx.degree_centrality``,
  ``nx.closeness_centrality``, ``nx.betweenness_centrality``, ``nx.load_centrality``,
  ``nx.average_neighbor_degree``); ``backend=`` is passed on to them (e.g. ``nx-parallel``).
  Pure Python shortest paths: ~35 s on ML-100K's alpha=0.005 graph, hours on ML-1M-sized graphs.
- ``engine="matrix"`` (default): the same definitions evaluated as breadth-first searches from a
  batch of sources at once, one adjacency matrix product per BFS level (Brandes' dependency
  accumulation for betweenness, networkx's equal-split rule for load, distance sums for closeness).
  Dense BLAS in float64 on these dense similarity graphs: well under a second on ML-100K.

The shortest-path features (closeness, betweenness, load) cost O(n_sources * n * n) on a dense graph.
``mode="exact"`` uses every node as a source; ``"sampled"`` uses ``n_pivots`` random sources
(Brandes-Pich estimators with networkx's scaling, Eppstein-Wang for closeness); ``"skip"`` leaves the
feature at zero; ``"auto"`` is exact up to ``exact_max_nodes`` graph nodes and sampled above (logged).

The graph is the set of nodes with at least one edge, as in the paper's code (which builds the
networkx graph from the edge list): isolated indices are not nodes, get all-zero features and do not
count in the normalisations.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse import csgraph

from ghrs.autoencoder import limited_threads
from ghrs.options import FromConfig

log = logging.getLogger(__name__)

FEATURES = ("pagerank", "degree", "closeness", "betweenness", "load", "avg_neighbor_degree")
PATH_FEATURES = ("closeness", "betweenness", "load")
MODES = ("auto", "exact", "sampled", "skip")
ENGINES = ("matrix", "networkx")
BACKEND_ALIASES = {"nx-parallel": "parallel", "nx_parallel": "parallel"}


@dataclass
class CentralityConfig(FromConfig):
    """How to compute the graph features (``model.centrality`` in ``conf/model/ghrs.yaml``).

    Attributes:
        engine: ``matrix`` (batched BFS with matrix products) or ``networkx``.
        closeness, betweenness, load: ``auto`` | ``exact`` | ``sampled`` | ``skip`` per feature.
        n_pivots: sources sampled by ``sampled`` (and by ``auto`` above ``exact_max_nodes``).
        exact_max_nodes: ``auto`` is exact up to this many graph nodes.
        self_loops: add a self-loop to every node, as the authors' feature script does (default; changes
            degree, PageRank and average neighbour degree only; shortest paths ignore self-loops).
        pagerank_alpha, pagerank_tol, pagerank_max_iter: as ``nx.pagerank``.
        backend: a networkx backend name (``nx-parallel``) passed as ``backend=`` to the networkx
            functions; requires ``engine=networkx``.
        batch_size: BFS sources per matrix product (memory ~ 6 * n_nodes * batch_size * 8 bytes).
        dense_max_nodes, dense_min_density: the matrix engine multiplies by a dense adjacency (BLAS)
            when the graph has at most ``dense_max_nodes`` nodes and at least this edge density, by a
            sparse CSR one otherwise. Measured (1 thread, float32): dense wins from ~12% density
            (ML-1M users 1-2,999, alpha 0.005, density 0.16: 2.0 s vs 3.0 s), sparse below (synthetic
            full size, 512 pivots: density 0.11, 3.4 s vs 5.0 s; density 0.006, 0.75 s vs 8.0 s).
        threads: threads of the matrix engine's products (``None``: torch's setting). 1 by default:
            on a machine whose cores are busy with other work, 2 OpenMP threads that spin-wait for each
            other were measured 3-9x *slower* than one (ML-1M users 1-2,999, alpha 0.005, exact: 6.6 s
            with 2 threads vs 2.1 s with 1 at load average 2.7 on 2 cores); on an idle machine 2 threads
            gain < 2x.
        dtype: arithmetic of the matrix engine's BFS products: ``float32`` (default, twice as fast;
            ~1e-6 relative difference from networkx) or ``float64`` (agrees to ~1e-12).
        seed: pivot sampling.
    """

    OPTION_GROUP: ClassVar[str] = "centrality"

    engine: str = "matrix"
    closeness: str = "auto"
    betweenness: str = "auto"
    load: str = "auto"
    n_pivots: int = 512
    exact_max_nodes: int = 4000
    self_loops: bool = True
    pagerank_alpha: float = 0.85
    pagerank_tol: float = 1e-6
    pagerank_max_iter: int = 100
    backend: str | None = None
    batch_size: int = 512
    dense_max_nodes: int = 12000
    dense_min_density: float = 0.12
    dtype: str = "float32"
    threads: int | None = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"centrality.engine must be one of {ENGINES}, got {self.engine!r}")
        for name in PATH_FEATURES:
            if getattr(self, name) not in MODES:
                raise ValueError(f"centrality.{name} must be one of {MODES}, got {getattr(self, name)!r}")
        if self.n_pivots < 2 or self.batch_size < 1 or self.exact_max_nodes < 0:
            raise ValueError("centrality: n_pivots >= 2, batch_size >= 1, exact_max_nodes >= 0 required")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"centrality.dtype must be float32 or float64, got {self.dtype!r}")
        if self.backend is not None and self.engine != "networkx":
            raise ValueError(
                f"centrality.backend={self.backend!r} is a networkx backend: it needs centrality.engine=networkx"
            )


    def modes_for(self, n_nodes: int) -> dict[str, str]:
        """Resolve ``auto`` for a graph with ``n_nodes`` nodes."""
        out = {}
        for name in PATH_FEATURES:
            mode = getattr(self, name)
            if mode == "auto":
                mode = "exact" if n_nodes <= self.exact_max_nodes or n_nodes <= self.n_pivots else "sampled"
            if mode == "sampled" and n_nodes <= self.n_pivots:
                mode = "exact"  # every node would be a pivot
            out[name] = mode
        return out


@dataclass
class GraphFeatures:
    """Raw (unscaled) graph features for every index of a graph.

    Attributes:
        values: (n_indices, 6) float64 in :data:`FEATURES` order; zero rows for isolated indices.
        in_graph: (n_indices,) bool, the index has at least one edge.
        modes: the mode used for each shortest-path feature.
        pivots: the sampled sources (node indices) when any feature was sampled.
        seconds: wall time per feature group.
    """

    values: np.ndarray
    in_graph: np.ndarray
    modes: dict[str, str]
    pivots: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    names: tuple[str, ...] = FEATURES


def resolve_backend(name: str | None) -> str | None:
    """Map a backend name to networkx's and check it is installed (clear error if not)."""
    if name is None:
        return None
    import networkx as nx

    key = BACKEND_ALIASES.get(name, name)
    if key == "networkx":
        return None
    installed = set(getattr(nx.utils.backends, "backends", {}))
    if key not in installed:
        raise ImportError(
            f"networkx backend {name!r} (networkx name {key!r}) is not installed; installed backends: "
            f"{sorted(installed) or 'none'}. Install it (e.g. `pip install nx-parallel`) or set "
            f"centrality.backend=null."
        )
    return key


def compute_graph_features(
    adjacency: sp.spmatrix, cfg: CentralityConfig | dict | None = None, sources: np.ndarray | None = None
) -> GraphFeatures:
    """Graph features of every index of ``adjacency`` (symmetric, 0/1, any diagonal: ignored).

    ``sources``: restrict the shortest-path sources to these indices (all graph nodes by default; when
    given, every path feature counts as ``sampled`` from them with the same estimators).
    """
    cfg = CentralityConfig.from_any(cfg)
    adj = sp.csr_matrix(adjacency, dtype=np.float64)
    adj.setdiag(0)
    adj.eliminate_zeros()
    n_total = adj.shape[0]
    deg_all = np.diff(adj.indptr)
    nodes = np.flatnonzero(deg_all > 0)
    n = len(nodes)
    values = np.zeros((n_total, len(FEATURES)))
    in_graph = deg_all > 0
    modes = cfg.modes_for(n)
    if n == 0:
        return GraphFeatures(values, in_graph, modes)
    sub = adj[nodes][:, nodes].tocsr()
    rng = np.random.default_rng(cfg.seed)
    pivots = None
    if sources is not None:
        pos = np.searchsorted(nodes, np.asarray(sources, np.int64))
        ok = (pos < n) & (nodes[np.minimum(pos, n - 1)] == np.asarray(sources))
        pivots = np.unique(pos[ok])
        if len(pivots) < 2:
            raise ValueError("compute_graph_features: `sources` must contain at least two graph nodes")
        modes = {k: ("skip" if v == "skip" else "sampled") for k, v in modes.items()}
    elif any(m == "sampled" for m in modes.values()):
        pivots = np.sort(rng.choice(n, size=min(cfg.n_pivots, n), replace=False))
    sampled = [k for k, m in modes.items() if m == "sampled"]
    if sampled and sources is None:
        log.info("graph features on %d nodes: %s sampled from %d pivots (exact up to %d nodes)",
                 n, sampled, len(pivots), cfg.exact_max_nodes)
    if cfg.engine == "networkx":
        sub_values, seconds = _networkx_features(sub, cfg, modes, pivots, rng)
    else:
        sub_values, seconds = _matrix_features(sub, cfg, modes, pivots)
    values[nodes] = sub_values
    return GraphFeatures(values, in_graph, modes, None if pivots is None else nodes[pivots], seconds)


# ----------------------------------------------------------------------------------------------------
# matrix engine


def _local_features(sub: sp.csr_matrix, cfg: CentralityConfig) -> np.ndarray:
    """PageRank, degree centrality, average neighbour degree (networkx's definitions) on a graph
    without isolated nodes."""
    n = sub.shape[0]
    loops = sp.identity(n, format="csr") if cfg.self_loops else None
    a = sub + loops if loops is not None else sub
    deg = np.asarray(sub.sum(1)).ravel() + (2.0 if cfg.self_loops else 0.0)  # a self-loop counts twice
    degree_c = deg / (n - 1) if n > 1 else np.ones(n)
    avg_nbr = (a @ deg) / deg
    # PageRank: networkx's power iteration (no dangling nodes here: every node has an edge).
    out_w = np.asarray(a.sum(1)).ravel()
    p = sp.diags(1.0 / out_w) @ a
    x = np.full(n, 1.0 / n)
    for _ in range(cfg.pagerank_max_iter):
        last = x
        x = cfg.pagerank_alpha * (x @ p) + (1 - cfg.pagerank_alpha) / n
        if np.abs(x - last).sum() < n * cfg.pagerank_tol:
            break
    else:
        log.warning("pagerank did not converge in %d iterations", cfg.pagerank_max_iter)
    return np.stack([x, degree_c, avg_nbr], 1)


def _matrix_features(
    sub: sp.csr_matrix, cfg: CentralityConfig, modes: dict[str, str], pivots: np.ndarray | None
) -> tuple[np.ndarray, dict[str, float]]:
    n = sub.shape[0]
    out = np.zeros((n, len(FEATURES)))
    t0 = time.perf_counter()
    local = _local_features(sub, cfg)
    out[:, FEATURES.index("pagerank")] = local[:, 0]
    out[:, FEATURES.index("degree")] = local[:, 1]
    out[:, FEATURES.index("avg_neighbor_degree")] = local[:, 2]
    seconds = {"local": time.perf_counter() - t0}
    wanted = {k: m for k, m in modes.items() if m != "skip"}
    if not wanted or n < 2:
        return out, seconds
    t0 = time.perf_counter()
    groups: dict[str, list[str]] = {}
    for name, mode in wanted.items():
        groups.setdefault(mode, []).append(name)
    for mode, names in groups.items():
        srcs = np.arange(n) if mode == "exact" else pivots
        threads = torch.get_num_threads() if cfg.threads is None else cfg.threads
        density = sub.nnz / max(1, n * (n - 1))
        dense = n <= cfg.dense_max_nodes and density >= cfg.dense_min_density
        with limited_threads(threads):
            res = shortest_path_features(sub, srcs, need=set(names), batch_size=cfg.batch_size, dense=dense,
                                         dtype=cfg.dtype)
        for name in names:
            out[:, FEATURES.index(name)] = res[name]
    seconds["paths"] = time.perf_counter() - t0
    return out, seconds


def _to_torch(sub: sp.csr_matrix, dense: bool, dt: torch.dtype) -> torch.Tensor:
    if dense:
        return torch.from_numpy(sub.toarray()).to(dt)
    csr = sub.tocsr()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(
            torch.from_numpy(csr.indptr.astype(np.int64)), torch.from_numpy(csr.indices.astype(np.int64)),
            torch.from_numpy(csr.data).to(dt), size=csr.shape, check_invariants=False,
        )


def shortest_path_features(
    sub: sp.csr_matrix,
    sources: np.ndarray,
    need: set[str] | None = None,
    batch_size: int = 512,
    dense: bool = True,
    dtype: str = "float64",
) -> dict[str, np.ndarray]:
    """Closeness, betweenness and load of every node of a graph (no isolated nodes) from BFS trees
    rooted at ``sources``, with networkx's normalisations.

    All sources = the exact values of ``nx.closeness_centrality``, ``nx.betweenness_centrality`` and
    ``nx.load_centrality``. A subset of k sources gives the sampled estimators: betweenness and load
    scaled as networkx's ``betweenness_centrality(k=...)`` (1/(k(n-2)) for non-sources, 1/((k-1)(n-2))
    for sources), closeness as Eppstein-Wang (distances from the sampled sources).

    Per batch of b sources: a forward BFS computes distances, shortest-path counts (sigma) and
    predecessor counts with one (n, n) @ (n, 2b) product per level; the backward pass accumulates
    Brandes' dependencies ``delta_v = sum_w sigma_v / sigma_w (1 + delta_w)`` and networkx's load
    ``L_v = 1 + sum_w L_w / |pred(w)|`` over successors w, one product per level.
    """
    need = set(PATH_FEATURES) if need is None else set(need)
    n = sub.shape[0]
    sources = np.asarray(sources, np.int64)
    k = len(sources)
    dt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    a = _to_torch(sub, dense, dt)
    _, labels = csgraph.connected_components(sub, directed=False)
    comp_size = torch.from_numpy(np.bincount(labels)[labels].astype(np.int64))
    mm = torch.mm if dense else torch.sparse.mm
    want_load = "load" in need
    want_bc = "betweenness" in need
    bc = torch.zeros(n, dtype=torch.float64)  # accumulated over batches in float64
    load = torch.zeros(n, dtype=torch.float64)
    dist_sum = torch.zeros(n, dtype=torch.float64)
    reach_cnt = torch.zeros(n, dtype=torch.float64)
    for start in range(0, k, batch_size):
        src = torch.from_numpy(sources[start : start + batch_size])
        b = len(src)
        cols = torch.arange(b)
        dist = torch.full((n, b), -1, dtype=torch.int32)
        sigma = torch.zeros((n, b), dtype=dt)
        npred = torch.zeros((n, b), dtype=dt)
        dist[src, cols] = 0
        sigma[src, cols] = 1.0
        front = torch.zeros((n, 2 * b if want_load else b), dtype=dt)
        front[src, cols] = 1.0
        if want_load:
            front[src, cols + b] = 1.0
        level = 0
        target = comp_size[src]  # nodes each BFS will reach: stop without a last, empty level
        while bool(((dist >= 0).sum(0) < target).any()):
            if level == 0 and dense:
                adj_cols = a[:, src]  # first level: the sources' adjacency columns, no product needed
                nxt = torch.cat([adj_cols, adj_cols], 1) if want_load else adj_cols
            else:
                nxt = mm(a, front)
            paths = nxt[:, :b]
            new = (paths > 0) & (dist < 0)
            if not bool(new.any()):
                break
            level += 1
            dist[new] = level
            sigma = torch.where(new, paths, sigma)
            front = torch.zeros_like(front)
            front[:, :b] = torch.where(new, paths, 0.0)
            if want_load:
                npred = torch.where(new, nxt[:, b:], npred)
                front[:, b:] = new.to(dt)
        reached = dist > 0
        dist_sum += torch.where(reached, dist, 0).sum(1, dtype=torch.float64)
        reach_cnt += reached.sum(1, dtype=torch.float64)
        if not (want_bc or want_load):
            continue
        delta = torch.zeros((n, b), dtype=dt)
        carried = (dist >= 0).to(dt)  # load: every reached node starts with 1
        for lev in range(level, 1, -1):
            at = dist == lev
            coef = torch.cat(
                [torch.where(at, (1.0 + delta) / sigma.clamp(min=1.0), 0.0),
                 torch.where(at, carried / npred.clamp(min=1.0), 0.0) if want_load else torch.empty(n, 0, dtype=dt)],
                1,
            )
            back = mm(a, coef)
            prev = dist == lev - 1
            delta = torch.where(prev, sigma * back[:, :b], delta)
            if want_load:
                carried = torch.where(prev, carried + back[:, b:], carried)
        bc += delta.sum(1, dtype=torch.float64)
        if want_load:
            load += torch.where(dist >= 0, carried - 1.0, 0.0).sum(1, dtype=torch.float64)
    is_source = np.zeros(n, bool)
    is_source[sources] = True
    out: dict[str, np.ndarray] = {}
    exact = k == n
    if "closeness" in need:
        s, c = dist_sum.numpy(), reach_cnt.numpy()
        k_v = np.where(is_source, k - 1, k).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            clo = np.where((s > 0) & (k_v > 0), (c / s) * (c / k_v), 0.0)
        out["closeness"] = clo
    for name, raw in (("betweenness", bc), ("load", load)):
        if name not in need:
            continue
        v = raw.numpy().copy()
        if n > 2:
            if exact:
                v *= 1.0 / ((n - 1) * (n - 2))
            else:
                scale_src = 1.0 / ((k - 1) * (n - 2)) if k > 1 else np.nan
                v *= np.where(is_source, scale_src, 1.0 / (k * (n - 2)))
        out[name] = v
    return out


# ----------------------------------------------------------------------------------------------------
# networkx engine


def to_networkx(sub: sp.csr_matrix, self_loops: bool = False):
    """networkx Graph on nodes 0..n-1 from a symmetric adjacency."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(range(sub.shape[0]))
    upper = sp.triu(sub, k=1).tocoo()
    g.add_edges_from(zip(upper.row.tolist(), upper.col.tolist()))
    if self_loops:
        g.add_edges_from((v, v) for v in range(sub.shape[0]))
    return g


def _call(fn, g, backend: str | None, **kw):
    if backend is None:
        return fn(g, **kw)
    try:
        return fn(g, backend=backend, **kw)
    except NotImplementedError as err:  # the backend lacks this function
        log.info("networkx backend %s: %s; using networkx's own %s", backend, err, fn.__name__)
        return fn(g, **kw)


def _networkx_features(
    sub: sp.csr_matrix, cfg: CentralityConfig, modes: dict[str, str], pivots: np.ndarray | None, rng
) -> tuple[np.ndarray, dict[str, float]]:
    import networkx as nx

    backend = resolve_backend(cfg.backend)
    n = sub.shape[0]
    g = to_networkx(sub, cfg.self_loops)
    out = np.zeros((n, len(FEATURES)))
    seconds: dict[str, float] = {}

    def put(name: str, d: dict) -> None:
        out[:, FEATURES.index(name)] = [d.get(v, 0.0) for v in range(n)]

    t0 = time.perf_counter()
    put("pagerank", _call(nx.pagerank, g, backend, alpha=cfg.pagerank_alpha, tol=cfg.pagerank_tol,
                          max_iter=cfg.pagerank_max_iter))
    put("degree", _call(nx.degree_centrality, g, backend))
    put("avg_neighbor_degree", _call(nx.average_neighbor_degree, g, backend))
    seconds["local"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    path_g = g
    if cfg.self_loops:  # shortest paths ignore self-loops; keep networkx's BFS on the plain graph
        path_g = to_networkx(sub, False)
    pivot_list = [] if pivots is None else pivots.tolist()
    if modes["closeness"] == "exact":
        put("closeness", _call(nx.closeness_centrality, path_g, backend))
    elif modes["closeness"] == "sampled":
        s = np.zeros(n)
        c = np.zeros(n)
        for src in pivot_list:
            for v, d in _call(nx.single_source_shortest_path_length, path_g, backend, source=src).items():
                if v != src:
                    s[v] += d
                    c[v] += 1
        k_v = np.where(np.isin(np.arange(n), pivot_list), len(pivot_list) - 1, len(pivot_list))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, FEATURES.index("closeness")] = np.where((s > 0) & (k_v > 0), (c / s) * (c / k_v), 0.0)
    if modes["betweenness"] == "exact":
        put("betweenness", _call(nx.betweenness_centrality, path_g, backend))
    elif modes["betweenness"] == "sampled":
        # networkx samples its own k pivots with its seed (not the pivots of the other features).
        put("betweenness", _call(nx.betweenness_centrality, path_g, backend, k=len(pivot_list),
                                 seed=int(rng.integers(2**31))))
    if modes["load"] == "exact":
        put("load", _call(nx.load_centrality, path_g, backend))
    elif modes["load"] == "sampled":
        # networkx has no sampled load centrality: sum its per-source load over the pivots.
        from networkx.algorithms.centrality.load import _node_betweenness

        total = np.zeros(n)
        for src in pivot_list:
            for v, x in _node_betweenness(path_g, src, False, False, None).items():
                total[v] += x
        k = len(pivot_list)
        if n > 2 and k > 1:
            total *= np.where(np.isin(np.arange(n), pivot_list), 1.0 / ((k - 1) * (n - 2)), 1.0 / (k * (n - 2)))
        out[:, FEATURES.index("load")] = total
    seconds["paths"] = time.perf_counter() - t0
    return out, seconds


# ----------------------------------------------------------------------------------------------------
# scaling


SCALINGS = ("max", "minmax", "standard", "none")


class FeatureScaler:
    """Column scaling fitted on training rows: ``max`` (divide by the column max, the paper's choice),
    ``minmax``, ``standard`` or ``none``. Constant columns are left unscaled (divided by 1)."""

    def __init__(self, kind: str = "max"):
        if kind not in SCALINGS:
            raise ValueError(f"feature scaling must be one of {SCALINGS}, got {kind!r}")
        self.kind = kind

    def fit(self, x: np.ndarray) -> FeatureScaler:
        x = np.asarray(x, np.float64)
        d = x.shape[1] if x.ndim == 2 else 0
        self.offset = np.zeros(d)
        self.scale = np.ones(d)
        if len(x) == 0 or self.kind == "none":
            return self
        if self.kind == "max":
            m = np.abs(x).max(0)
            self.scale = np.where(m > 0, m, 1.0)
        elif self.kind == "minmax":
            lo, hi = x.min(0), x.max(0)
            self.offset, self.scale = lo, np.where(hi > lo, hi - lo, 1.0)
        else:
            mu, sd = x.mean(0), x.std(0)
            self.offset, self.scale = mu, np.where(sd > 0, sd, 1.0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) - self.offset) / self.scale
