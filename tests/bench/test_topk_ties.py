"""bench/topk_ties.py: its leave-one-out with an item-index tie-break is the package's TemporalLOOSplit, and
another tie-break changes the test items only among same-second ratings."""


import numpy as np

from ghrs.data.splits import TemporalLOOSplit
from ghrs.data.synthetic import make_synthetic
from tests.bench import load_bench


def test_item_tie_break_is_the_package_split_and_others_move_only_tied_items():
    bench = load_bench("topk_ties")
    ds = make_synthetic(n_users=60, n_items=40, seed=0)
    ds.ratings["timestamp"] = ds.ratings["timestamp"] // 10**5 * 10**5  # coarse: many same-second ties
    r = ds.ratings
    ours = bench.loo_split(r, r["item"].to_numpy())
    package = TemporalLOOSplit()(ds)
    for part in ("train", "valid", "test"):
        assert getattr(ours, part).sort_index().equals(getattr(package, part).sort_index())
    flipped = bench.loo_split(r, -r["item"].to_numpy())
    moved = ours.test.set_index("user")["item"] != flipped.test.set_index("user")["item"]
    assert moved.any()  # the ties really decide some test items
    last = r.groupby("user")["timestamp"].transform("max") == r["timestamp"]
    n_last = r[last].groupby("user").size()
    assert (n_last[moved[moved].index] > 1).all()  # only users with a tie at their latest second move
    assert np.array_equal(np.sort(ours.test["user"]), np.sort(flipped.test["user"]))
