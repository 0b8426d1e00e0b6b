import logging

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from ghrs.graph.graph_features import (
    FEATURES,
    CentralityConfig,
    FeatureScaler,
    compute_graph_features,
    resolve_backend,
    shortest_path_features,
)


def small_graph(seed: int, n: int = 50, p: float = 0.09, isolated: int = 4):
    """A random graph (possibly disconnected) plus isolated indices at the end."""
    g = nx.gnp_random_graph(n, p, seed=seed)
    g.add_nodes_from(range(n, n + isolated))
    adj = nx.to_scipy_sparse_array(g, nodelist=range(n + isolated), format="csr")
    return g, sp.csr_matrix(adj)


def networkx_reference(g: nx.Graph, self_loops: bool) -> dict[str, dict]:
    """The features as the authors' script computes them: on the graph of the nodes with edges."""
    h = g.subgraph([v for v in g if g.degree(v) > 0]).copy()
    looped = h.copy()
    if self_loops:
        looped.add_edges_from((v, v) for v in h)
    return {
        "pagerank": nx.pagerank(looped.to_directed()),
        "degree": nx.degree_centrality(looped),
        "closeness": nx.closeness_centrality(h),
        "betweenness": nx.betweenness_centrality(h),
        "load": nx.load_centrality(h),
        "avg_neighbor_degree": nx.average_neighbor_degree(looped),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("self_loops", [False, True])
def test_matrix_engine_matches_networkx(seed, self_loops):
    g, adj = small_graph(seed)
    ref = networkx_reference(g, self_loops)
    f64 = compute_graph_features(adj, CentralityConfig(dtype="float64", self_loops=self_loops))
    f32 = compute_graph_features(adj, CentralityConfig(dtype="float32", self_loops=self_loops))
    for j, name in enumerate(FEATURES):
        expected = np.array([ref[name].get(v, 0.0) for v in range(adj.shape[0])])
        np.testing.assert_allclose(f64.values[:, j], expected, rtol=1e-6, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(f32.values[:, j], expected, rtol=1e-4, atol=1e-7, err_msg=name)
    assert (f64.values[~f64.in_graph] == 0).all() and f64.in_graph.sum() == len(ref["degree"])
    assert f64.modes == {"closeness": "exact", "betweenness": "exact", "load": "exact"}


def test_networkx_engine_is_networkx():
    g, adj = small_graph(3)
    ref = networkx_reference(g, False)
    f = compute_graph_features(adj, CentralityConfig(engine="networkx", self_loops=False))
    for j, name in enumerate(FEATURES):
        expected = np.array([ref[name].get(v, 0.0) for v in range(adj.shape[0])])
        np.testing.assert_allclose(f.values[:, j], expected, rtol=1e-9, atol=1e-12, err_msg=name)


def connected(seed: int, n: int = 70):
    g = nx.connected_watts_strogatz_graph(n, 6, 0.3, seed=seed)
    return g, sp.csr_matrix(nx.to_scipy_sparse_array(g, nodelist=range(n), format="csr"))


def test_sampled_betweenness_is_networkx_estimator_on_the_pivots():
    g, adj = connected(0)
    n = adj.shape[0]
    pivots = np.array([1, 5, 8, 20, 33, 60])
    got = shortest_path_features(adj, pivots, dtype="float64")
    # sum over the pivots of the single-source dependencies, scaled as nx.betweenness_centrality(k=...)
    raw = nx.betweenness_centrality_subset(g, sources=pivots.tolist(), targets=list(g), normalized=False)
    k = len(pivots)
    scale = np.where(np.isin(np.arange(n), pivots), 1 / ((k - 1) * (n - 2)), 1 / (k * (n - 2)))
    expected = 2 * np.array([raw[v] for v in range(n)]) * scale  # the subset version halves undirected sums
    np.testing.assert_allclose(got["betweenness"], expected, rtol=1e-9, atol=1e-12)


def test_all_pivots_equals_exact_and_few_pivots_approximate():
    g, adj = connected(1, n=120)
    exact = shortest_path_features(adj, np.arange(120), dtype="float64")
    for name, ref in (("closeness", nx.closeness_centrality(g)), ("load", nx.load_centrality(g))):
        np.testing.assert_allclose(exact[name], [ref[v] for v in range(120)], rtol=1e-9, err_msg=name)
    approx = compute_graph_features(adj, CentralityConfig(closeness="sampled", betweenness="sampled", load="sampled",
                                                          n_pivots=60, seed=0))
    assert approx.modes["betweenness"] == "sampled" and len(approx.pivots) == 60
    for j, name in ((2, "closeness"), (3, "betweenness"), (4, "load")):
        corr = np.corrcoef(approx.values[:, j], exact[name])[0, 1]
        assert corr > 0.9, (name, corr)
    # closeness from half the nodes is within a few percent
    assert np.abs(approx.values[:, 2] / exact["closeness"] - 1).mean() < 0.05


def test_auto_switches_to_sampling_above_the_threshold(caplog):
    _, adj = connected(2, n=80)
    with caplog.at_level(logging.INFO, logger="ghrs.graph.graph_features"):
        f = compute_graph_features(adj, CentralityConfig(exact_max_nodes=50, n_pivots=20))
    assert set(f.modes.values()) == {"sampled"} and "sampled from 20 pivots" in caplog.text
    assert compute_graph_features(adj, CentralityConfig(exact_max_nodes=100)).modes["load"] == "exact"
    skipped = compute_graph_features(adj, CentralityConfig(closeness="skip", betweenness="skip"))
    assert (skipped.values[:, 2] == 0).all() and (skipped.values[:, 3] == 0).all() and (skipped.values[:, 4] > 0).any()


def test_backend_switch_errors_clearly():
    with pytest.raises(ValueError, match="needs centrality.engine=networkx"):
        CentralityConfig(backend="nx-parallel")
    with pytest.raises(ImportError, match="'nx-parallel'.*not installed"):
        resolve_backend("nx-parallel")
    _, adj = connected(3, n=20)
    with pytest.raises(ImportError, match="not installed"):
        compute_graph_features(adj, CentralityConfig(engine="networkx", backend="nx-parallel"))
    assert resolve_backend(None) is None and resolve_backend("networkx") is None
    with pytest.raises(ValueError, match="unknown centrality option"):
        CentralityConfig.from_any({"pivots": 3})


def test_empty_and_tiny_graphs():
    f = compute_graph_features(sp.csr_matrix((5, 5)))
    assert f.values.shape == (5, 6) and not f.values.any() and not f.in_graph.any()
    one_edge = sp.csr_matrix(([1, 1], ([0, 1], [1, 0])), shape=(3, 3))
    f = compute_graph_features(one_edge, CentralityConfig(self_loops=False))
    assert np.allclose(f.values[:2, FEATURES.index("degree")], 1.0) and np.allclose(f.values[:2, 3], 0.0)
    f = compute_graph_features(one_edge)  # default: the authors' self-loops, which count twice in the degree
    assert np.allclose(f.values[:2, FEATURES.index("degree")], 3.0) and np.allclose(f.values[:2, 3], 0.0)


@pytest.mark.parametrize("kind", ["max", "minmax", "standard", "none"])
def test_feature_scaler(kind):
    train = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 0.0]])
    s = FeatureScaler(kind).fit(train)
    out = s.transform(np.array([[3.0, 5.0]]))
    expected = {"max": [1.0, 5.0], "minmax": [1.0, 5.0], "standard": [np.sqrt(1.5), 5.0], "none": [3.0, 5.0]}[kind]
    np.testing.assert_allclose(out[0], expected)
    with pytest.raises(ValueError, match="feature scaling"):
        FeatureScaler("log")


@pytest.mark.parametrize("dense", [True, False])
def test_dense_and_sparse_products_agree(dense):
    g, adj = small_graph(4, n=60, p=0.08, isolated=0)
    h = g.subgraph([v for v in g if g.degree(v) > 0])
    nodes = sorted(h)
    sub = adj[nodes][:, nodes]
    got = shortest_path_features(sub, np.arange(len(nodes)), dense=dense, dtype="float64")
    ref = nx.betweenness_centrality(h)
    np.testing.assert_allclose(got["betweenness"], [ref[v] for v in nodes], rtol=1e-9, atol=1e-12)
    ref = nx.load_centrality(h)
    np.testing.assert_allclose(got["load"], [ref[v] for v in nodes], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("engine", ["matrix", "networkx"])
def test_default_features_follow_the_authors_graph_construction(engine):
    """The default config reproduces the authors' feature script (hadoov/GHRS ``Features100K.py``): an
    edge list where every edge (a, b) also adds (a, a) and (b, b) with weight 1, PageRank on its directed
    version, and all six networkx functions on that looped graph (average neighbour degree weighted)."""
    g, adj = small_graph(5)
    authors = nx.Graph()
    for a, b in g.edges():
        authors.add_edge(a, b, weight=1)
        authors.add_edge(a, a, weight=1)
        authors.add_edge(b, b, weight=1)
    ref = {
        "pagerank": nx.pagerank(authors.to_directed()),
        "degree": nx.degree_centrality(authors),
        "closeness": nx.closeness_centrality(authors),
        "betweenness": nx.betweenness_centrality(authors),
        "load": nx.load_centrality(authors),
        "avg_neighbor_degree": nx.average_neighbor_degree(authors, weight="weight"),
    }
    f = compute_graph_features(adj, CentralityConfig(engine=engine, dtype="float64"))
    for j, name in enumerate(FEATURES):
        expected = np.array([ref[name].get(v, 0.0) for v in range(adj.shape[0])])
        np.testing.assert_allclose(f.values[:, j], expected, rtol=1e-6, atol=1e-12, err_msg=name)
