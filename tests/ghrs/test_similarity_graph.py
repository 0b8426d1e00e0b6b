import itertools

import numpy as np
import pandas as pd
import pytest

from ghrs.graph.similarity_graph import (
    agreement_neighbours,
    build_agreement_graph,
    extend_with_new_users,
    item_similarity_graph,
    rating_indicators,
    user_similarity_graph,
)


def table(rows):
    return pd.DataFrame(rows, columns=["user", "item", "rating"]).astype({"rating": np.float32})


# Hand-made: 5 users, 10 items, alpha = 0.2 -> an edge needs >= 2 same (item, rating) pairs.
HAND = table([
    (0, 0, 5), (0, 1, 4), (0, 2, 3), (0, 3, 1),
    (1, 0, 5), (1, 1, 4), (1, 2, 3), (1, 3, 2), (1, 4, 2),  # agrees with 0 on items 0, 1, 2
    (2, 0, 5), (2, 1, 1),  # agrees with 0 and 1 on item 0 only
    (3, 3, 2), (3, 4, 2), (3, 5, 5),  # agrees with 1 on items 3, 4 (exactly the threshold)
    (3, 0, 4),  # same item as 0/1/2, different rating: no agreement
])  # user 4 has no ratings


def edges(graph):
    u, v = graph.edges()
    return set(zip(u.tolist(), v.tolist()))


def test_hand_made_graph_has_exactly_the_expected_edges():
    g = user_similarity_graph(HAND, n_users=5, n_items=10, alpha=0.2)
    assert g.threshold == pytest.approx(2.0)
    assert edges(g) == {(0, 1), (1, 3)}
    assert g.n_edges == 2 and list(g.nodes) == [0, 1, 3]
    a = g.adjacency.toarray()
    assert (a == a.T).all() and (np.diag(a) == 0).all()
    # a higher threshold keeps only the strongest pair; a threshold below 1 still needs one agreement
    assert edges(user_similarity_graph(HAND, 5, 10, alpha=0.3)) == {(0, 1)}
    assert edges(user_similarity_graph(HAND, 5, 10, alpha=0.0)) == {(0, 1), (0, 2), (1, 2), (1, 3)}


def brute_force_edges(t: pd.DataFrame, threshold: float) -> set:
    by_user = {u: set(zip(g["item"], g["rating"])) for u, g in t.groupby("user")}
    out = set()
    for a, b in itertools.combinations(sorted(by_user), 2):
        if len(by_user[a] & by_user[b]) >= max(threshold, 1):
            out.add((a, b))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_loop_over_user_pairs_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 40, 30
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, n_users, 600), rng.integers(0, n_items, 600))}
    t = table([(u, i, float(rng.integers(1, 4))) for u, i in sorted(pairs)])
    g = user_similarity_graph(t, n_users, n_items, alpha=0.1)  # threshold 3
    assert edges(g) == brute_force_edges(t, 3.0)
    # the block size of the sparse product does not change the result
    small = build_agreement_graph(t["user"], t["item"], t["rating"], n_users, n_items, 3.0, block=7)
    assert edges(small) == edges(g)


def test_item_graph_counts_co_raters():
    t = table([(0, 0, 5), (0, 1, 1), (1, 0, 4), (1, 1, 4), (2, 0, 3), (2, 2, 3)])
    any_rating = item_similarity_graph(t, n_users=3, n_items=3, alpha=2 / 3)  # >= 2 common raters
    assert edges(any_rating) == {(0, 1)}
    same = item_similarity_graph(t, n_users=3, n_items=3, alpha=1 / 3, same_rating=True)  # >= 1 same rating
    assert edges(same) == {(0, 1), (0, 2)}


def test_new_users_link_only_to_training_users():
    g = user_similarity_graph(HAND, n_users=7, n_items=10, alpha=0.2)
    # users 5 and 6 are new: 5 agrees with 0 and 1 on two items, 6 agrees with 5 (but not with training users)
    new = table([(5, 0, 5), (5, 1, 4), (6, 0, 5), (6, 1, 4), (6, 9, 1)])
    new.loc[new.user == 6, "rating"] = [5, 2, 1]  # 6 agrees with 0/1/2 on item 0 only
    ext = extend_with_new_users(g, HAND, new, n_users=7, n_items=10)
    assert edges(ext) == {(0, 1), (1, 3), (0, 5), (1, 5)}
    # the training graph is unchanged, and the graph can grow past its fit-time size
    assert edges(g) == {(0, 1), (1, 3)}
    bigger = extend_with_new_users(g, HAND, table([(8, 2, 3), (8, 1, 4)]), n_users=9, n_items=10)
    assert (0, 8) in edges(bigger) and bigger.n_nodes == 9


def test_agreement_neighbours_rate_and_top_k():
    mats = rating_indicators(HAND, np.unique(HAND["rating"]), 5, 10)
    w = agreement_neighbours(mats, mats, k=1, shrink=0.0).toarray()
    # user 0 co-rated 4 items with user 1 and agreed on 3 -> 0.75 (its best neighbour)
    assert w[0, 1] == pytest.approx(0.75) and (w[0] > 0).sum() == 1
    assert np.diag(w).sum() == 0
    w2 = agreement_neighbours(mats, mats, k=5, shrink=4.0).toarray()
    assert w2[0, 1] == pytest.approx(3 / 8) and w2[0, 2] == pytest.approx(1 / 6)
    assert w2[3, 0] == 0  # co-rated item 0 and 3 but never agreed


def _counts_brute(ratings, n_users):
    same = {}
    for (a, ia, ra), (b, ib, rb) in itertools.product(ratings[["user", "item", "rating"]].itertuples(index=False), repeat=2):
        if a != b and ia == ib and ra == rb:
            same[(a, b)] = same.get((a, b), 0) + 1
    return same


@pytest.mark.parametrize("max_degree", [1, 2, 3])
def test_max_degree_keeps_each_users_strongest_links(max_degree):
    """Bounded graph = the union over users of their top-``max_degree`` links above the threshold."""
    rng = np.random.default_rng(max_degree)
    n_users, n_items = 25, 12
    rows = {(u, i): int(rng.integers(1, 4)) for u in range(n_users) for i in rng.choice(n_items, 7, replace=False)}
    ratings = table([(u, i, r) for (u, i), r in rows.items()])
    full = user_similarity_graph(ratings, n_users, n_items, alpha=2 / n_items)
    small = user_similarity_graph(ratings, n_users, n_items, alpha=2 / n_items, block=4, max_degree=max_degree)
    counts = _counts_brute(ratings, n_users)
    expected = set()
    for a in range(n_users):
        links = sorted(((-c, b) for (x, b), c in counts.items() if x == a and c >= 2))[:max_degree]
        expected |= {(min(a, b), max(a, b)) for _, b in links}
    assert edges(small) == expected
    assert edges(small) <= edges(full)  # a subgraph of the paper's graph
    assert small.n_edges <= n_users * max_degree
    big = user_similarity_graph(ratings, n_users, n_items, alpha=2 / n_items, max_degree=n_users)
    assert edges(big) == edges(full)


def test_max_degree_bound_is_kept_for_folded_in_users():
    g = user_similarity_graph(HAND, n_users=5, n_items=10, alpha=0.1, max_degree=1)
    new = table([(5, 0, 5), (5, 1, 4), (5, 2, 3)])  # agrees with 0 and 1 on 3 items, with 2 on 1
    ext = extend_with_new_users(g, HAND, new, n_users=6, n_items=10)
    assert sum(1 for u, v in edges(ext) if 5 in (u, v)) == 1
    with pytest.raises(ValueError, match="max_degree"):
        user_similarity_graph(HAND, n_users=5, n_items=10, alpha=0.1, max_degree=0)


@pytest.mark.parametrize("k", [1, 4, 30])
def test_agreement_neighbours_equal_a_dense_computation(k):
    rng = np.random.default_rng(k)
    n_users, n_items = 30, 15
    rows = {(u, i): int(rng.integers(1, 4)) for u in range(n_users) for i in rng.choice(n_items, 6, replace=False)}
    ratings = table([(u, i, r) for (u, i), r in rows.items()])
    mats = rating_indicators(ratings, np.unique(ratings["rating"]), n_users, n_items)
    got = agreement_neighbours(mats, mats, k=k, shrink=2.0, block=7).toarray()
    anyr = sum(mats[1:], mats[0]).toarray()
    agree = sum((m @ m.T).toarray() for m in mats)
    rate = agree / (anyr @ anyr.T + 2.0)
    np.fill_diagonal(rate, 0)
    for u in range(n_users):
        order = sorted(range(n_users), key=lambda v: (-rate[u, v], v))
        want = [v for v in order[:k] if rate[u, v] > 0]
        assert set(np.flatnonzero(got[u])) == set(want)
        np.testing.assert_allclose(got[u, want], rate[u, want])


def test_rows_too_short_to_reach_the_threshold_are_pruned_exactly():
    # heavy-tailed activity: most users have fewer ratings than the threshold and cannot link
    rng = np.random.default_rng(5)
    n_users, n_items = 60, 40
    rows = []
    for u in range(n_users):
        n = int(min(n_items, rng.lognormal(1.5, 1.0) + 1))
        rows += [(u, int(i), float(rng.integers(1, 3))) for i in rng.choice(n_items, n, replace=False)]
    t = table(rows)
    threshold = 6.0
    counts = t.groupby("user").size()
    assert (counts < threshold).sum() > n_users // 2 and (counts >= threshold).sum() >= 5
    g = build_agreement_graph(t["user"], t["item"], t["rating"], n_users, n_items, threshold, block=5)
    want = brute_force_edges(t, threshold)
    assert want and edges(g) == want


def test_agreement_neighbours_candidate_pool_equals_the_dense_computation_on_the_pool():
    rng = np.random.default_rng(11)
    n_users, n_items = 30, 15
    rows = {(u, i): int(rng.integers(1, 4)) for u in range(n_users) for i in rng.choice(n_items, 6, replace=False)}
    ratings = table([(u, i, r) for (u, i), r in rows.items()])
    mats = rating_indicators(ratings, np.unique(ratings["rating"]), n_users, n_items)
    pool = np.array([1, 4, 7, 8, 20, 29])
    got = agreement_neighbours(mats, mats, k=3, shrink=2.0, block=4, right_rows=pool).toarray()
    anyr = sum(mats[1:], mats[0]).toarray()
    rate = sum((m @ m.T).toarray() for m in mats) / (anyr @ anyr.T + 2.0)
    np.fill_diagonal(rate, 0)
    outside = np.setdiff1d(np.arange(n_users), pool)
    assert not got[:, outside].any()
    for u in range(n_users):
        order = sorted(pool, key=lambda v: (-rate[u, v], v))
        want = [v for v in order[:3] if rate[u, v] > 0]
        assert set(np.flatnonzero(got[u])) == set(want)
        np.testing.assert_allclose(got[u, want], rate[u, want])
