import numpy as np
import pytest

from ghrs.clustering import fit_clusters, knee_point, plot_elbow


def blobs(k, n_per=60, d=6, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, d))
    x = np.concatenate([c + spread * rng.normal(size=(n_per, d)) for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


def test_knee_point_of_a_clear_elbow():
    ks = np.arange(1, 11)
    inertia = np.where(ks <= 4, 100.0 - 22 * (ks - 1), 34.0 - 1.0 * (ks - 4))
    assert knee_point(ks, inertia) == 4
    assert knee_point(np.array([2, 3]), np.array([5.0, 1.0])) == 2  # too short for an elbow
    assert knee_point(ks, np.ones(10)) == 1  # flat curve
    assert knee_point(ks, inertia, log=False) == 4


@pytest.mark.parametrize("k,seed", [(4, 0), (6, 1), (8, 2)])
def test_elbow_finds_the_planted_number_of_blobs(k, seed):
    x, truth = blobs(k, seed=seed)
    res = fit_clusters(x, None, k_range=(2, 16), seed=0)
    assert res.chosen_by == "elbow" and abs(res.k - k) <= 1
    assert len(res.ks) == 15 and np.all(np.diff(res.inertias) <= 1e-6 * res.inertias[0])
    if res.k == k:  # recovered clusters are the planted ones (up to relabelling)
        pairs = {(a, b) for a, b in zip(truth, res.labels)}
        assert len(pairs) == k


def test_fixed_k_and_prediction(tmp_path):
    x, _ = blobs(3)
    res = fit_clusters(x, n_clusters=5, seed=0)
    assert res.k == 5 and res.chosen_by == "fixed" and len(res.ks) == 0
    assert plot_elbow(res, tmp_path / "none.png") is None
    assert set(res.predict(x[:10])) <= set(range(5))
    with pytest.raises(ValueError, match="n_clusters"):
        fit_clusters(x, n_clusters=0)
    res = fit_clusters(x, None, k_range=(1, 6))
    path = plot_elbow(res, tmp_path / "elbow.png")
    assert path.exists() and path.stat().st_size > 1000
