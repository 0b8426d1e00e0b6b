import numpy as np
import pandas as pd
import pytest

from ghrs.data.splits import ColdItemSplit, ColdUserSplit, OfficialSplit, RandomSplit, TemporalLOOSplit
from ghrs.data.synthetic import make_synthetic
from ghrs.evaluation import history_for

DS = make_synthetic(n_users=120, n_items=80, ratings_per_user=20, seed=3)
DS.folds["u1"] = np.arange(0, len(DS.ratings), 5)

SPLITS = [
    OfficialSplit("u1", valid_ratio=0.1),
    RandomSplit(0.2, valid_ratio=0.1, seed=1),
    RandomSplit(n_folds=5, fold=4, seed=2),
    TemporalLOOSplit(),
    ColdUserSplit(0.2, reveal=0, valid_ratio=0.1),
    ColdUserSplit(0.2, reveal=3),
    ColdItemSplit(0.2, valid_ratio=0.1),
]


def pairs(df: pd.DataFrame) -> set:
    return set(zip(df["user"], df["item"]))


@pytest.mark.parametrize("split", SPLITS, ids=lambda s: type(s).__name__)
def test_no_test_interaction_is_seen_in_training(split):
    s = split(DS)
    assert len(s.test) > 0
    assert not pairs(s.test) & pairs(s.train)
    assert not pairs(s.test) & pairs(s.valid)
    assert not pairs(s.test) & pairs(s.revealed)
    assert not pairs(s.valid) & pairs(s.train)
    # what the model conditions on at test time never includes a test rating either
    assert not pairs(s.test) & pairs(history_for(s, "test"))
    # the parts partition the ratings
    assert len(s.train) + len(s.valid) + len(s.test) + len(s.revealed) == len(DS.ratings)


@pytest.mark.parametrize("split", SPLITS, ids=lambda s: type(s).__name__)
def test_reproducible_from_seed(split):
    a, b = split(DS), split(DS)
    assert a.test.index.equals(b.test.index) and a.train.index.equals(b.train.index)


def test_random_kfold_covers_every_rating_once():
    folds = [RandomSplit(n_folds=4, fold=k, seed=0)(DS).test.index for k in range(4)]
    allidx = np.concatenate([f.to_numpy() for f in folds])
    assert len(allidx) == len(DS.ratings) == len(np.unique(allidx))


def test_temporal_loo_takes_the_last_two_in_time():
    s = TemporalLOOSplit()(DS)
    assert s.test["user"].is_unique and len(s.test) == DS.n_users
    last_train = s.train.groupby("user")["timestamp"].max()
    assert (s.valid.set_index("user")["timestamp"] >= last_train.reindex(s.valid["user"]).to_numpy()).all()
    assert (s.test.set_index("user")["timestamp"].sort_index() >= s.valid.set_index("user")["timestamp"].sort_index()).all()


@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_cold_user_reveal_counts(k):
    s = ColdUserSplit(0.25, reveal=k, seed=7)(DS)
    cold = set(s.cold_users)
    assert len(cold) == round(0.25 * DS.n_users)
    assert not cold & set(s.train["user"]) and not cold & set(s.valid["user"])
    counts = s.revealed.groupby("user").size()
    assert (counts == k).all() and (len(counts) == len(cold) if k else len(s.revealed) == 0)
    # revealed ratings are each cold user's first k in time
    for u in list(cold)[:10]:
        hist = DS.ratings[DS.ratings.user == u].sort_values("timestamp", kind="stable")
        assert list(hist["item"][:k]) == list(s.revealed[s.revealed.user == u]["item"])
        if k:
            assert s.revealed[s.revealed.user == u]["timestamp"].max() <= s.test[s.test.user == u]["timestamp"].min()


def test_cold_items_absent_from_training():
    s = ColdItemSplit(0.3, seed=1)(DS)
    assert not set(s.cold_items) & set(s.train["item"]) and set(s.test["item"]) <= set(s.cold_items)


def test_bad_split_values():
    with pytest.raises(ValueError, match="split.test_ratio"):
        RandomSplit(1.5)
    with pytest.raises(ValueError, match="split.reveal"):
        ColdUserSplit(0.1, reveal=-1)
    with pytest.raises(ValueError, match="no predefined fold 'u9'"):
        OfficialSplit("u9")(make_synthetic(n_users=20, n_items=10, seed=0))


def test_temporal_loo_breaks_timestamp_ties_by_item_whatever_the_file_order(tmp_path):
    from ghrs.data.movielens import load_movielens
    from tests.ghrs.data.fixtures import write_ml100k

    folder = write_ml100k(tmp_path / "a", n_users=40, n_items=30)
    # coarse timestamps: many ratings of a user share their latest second (as 415 ML-100K users do)
    lines = [line.split("\t") for line in (folder / "u.data").read_text().splitlines()]
    lines = ["\t".join([u, i, r, str(int(t) // 10**6 * 10**6)]) for u, i, r, t in lines]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    shuffled = write_ml100k(tmp_path / "b", n_users=40, n_items=30)
    perm = np.random.default_rng(0).permutation(len(lines))
    (shuffled / "u.data").write_text("\n".join(lines[k] for k in perm) + "\n")

    def raw_pairs(root):
        ds = load_movielens("ml-100k", root=str(root), download=False, data_dirs=[])
        s = TemporalLOOSplit()(ds)
        raw = lambda df: sorted(zip(ds.user_ids[df["user"]], ds.item_ids[df["item"]]))
        return ds, raw(s.test), raw(s.valid), raw(s.train)

    ds, *a = raw_pairs(folder)
    _, *b = raw_pairs(shuffled)
    last = ds.ratings.groupby("user")["timestamp"].transform("max") == ds.ratings["timestamp"]
    assert (ds.ratings[last].groupby("user").size() > 1).sum() >= 10  # the ties are really there
    assert a == b
    test = dict(a[0])  # the tie goes to the largest item id among the latest ratings
    r = ds.ratings.assign(u=ds.user_ids[ds.ratings["user"]], i=ds.item_ids[ds.ratings["item"]])
    latest = r[r["timestamp"] == r.groupby("user")["timestamp"].transform("max")].groupby("u")["i"].max()
    assert all(test[u] == latest[u] for u in test)
