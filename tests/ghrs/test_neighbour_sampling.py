import numpy as np
import pytest
import torch

from ghrs.graph.neighbour_sampling import CSRGraph, sample_propagation


def random_graph(n=40, p=0.15, seed=0):
    rng = np.random.default_rng(seed)
    a = np.triu(rng.random((n, n)) < p, 1)
    a = a | a.T
    a[0] = a[:, 0] = False  # an isolated node
    a[1, 2:] = a[2:, 1] = True  # a hub: degree far above the fan-out
    src, dst = np.nonzero(a)
    edge_index = torch.as_tensor(np.stack([src, dst]), dtype=torch.long)
    deg = a.sum(1)
    with np.errstate(divide="ignore"):
        dinv = np.where(deg > 0, 1 / np.sqrt(deg), 0)
    return CSRGraph.from_edge_index(edge_index, n), dinv[:, None] * a * dinv[None, :]


def propagate(nodes, m, x, layers):
    out, h = [], x[nodes]
    for _ in range(layers):
        h = m @ h
        out.append(h)
    return out


def test_exact_when_the_fanout_covers_every_degree():
    g, a = random_graph()
    x = torch.randn(g.n_nodes, 3, dtype=torch.float64)
    seeds = torch.tensor([5, 1, 0, 7, 5])
    nodes, m = sample_propagation(g, seeds, fanout=g.n_nodes, n_layers=3)
    assert nodes[:4].tolist() == [0, 1, 5, 7]  # unique seeds first, sorted
    got = propagate(nodes, m.to(torch.float64), x, 3)
    want = x.numpy()
    for layer in range(3):
        want = a @ want
        np.testing.assert_allclose(got[layer][:4].numpy(), want[[0, 1, 5, 7]], atol=1e-6)


def test_small_fanout_is_unbiased_and_bounded():
    g, a = random_graph(seed=1)
    x = torch.randn(g.n_nodes, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    seeds = torch.tensor([1, 3, 8])  # node 1: degree 38 against a fan-out of 3
    gen = torch.Generator().manual_seed(0)
    draws = [[], []]
    max_sub = 0
    for _ in range(800):
        nodes, m = sample_propagation(g, seeds, fanout=3, n_layers=2, generator=gen)
        max_sub = max(max_sub, m._nnz())
        for layer, h in enumerate(propagate(nodes, m.to(torch.float64), x, 2)):
            draws[layer].append(h[:3].numpy())
    want = [a @ x.numpy()]
    want.append(a @ want[0])
    for layer in range(2):
        d = np.stack(draws[layer])  # (draws, seeds, 2)
        se = d.std(0) / np.sqrt(len(d))
        # unbiased: the mean of the draws lies within a few standard errors of the exact propagation
        assert (np.abs(d.mean(0) - want[layer][[1, 3, 8]]) < 4.5 * se + 1e-9).all()
    assert max_sub <= 3 * 3 + 3 * 3 * 3  # seeds x fanout + hop-1 nodes x fanout, whatever the degrees


def test_bad_arguments():
    g, _ = random_graph()
    with pytest.raises(ValueError, match="fanout"):
        sample_propagation(g, torch.tensor([1]), fanout=0, n_layers=2)
