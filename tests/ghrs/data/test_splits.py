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


def _tied_ml100k(tmp_path):
    """Two copies of one small ML-100K: coarse timestamps (many users tie on their latest second, as 415
    ML-100K users do) and the same lines shuffled."""
    from tests.ghrs.data.fixtures import write_ml100k

    folder = write_ml100k(tmp_path / "a", n_users=40, n_items=30)
    lines = [line.split("\t") for line in (folder / "u.data").read_text().splitlines()]
    lines = ["\t".join([u, i, r, str(int(t) // 10**6 * 10**6)]) for u, i, r, t in lines]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    shuffled = write_ml100k(tmp_path / "b", n_users=40, n_items=30)
    perm = np.random.default_rng(0).permutation(len(lines))
    (shuffled / "u.data").write_text("\n".join(lines[k] for k in perm) + "\n")
    return folder, shuffled, lines, perm


def _loo_raw(root, tie_break):
    """(dataset, raw (user, item) pairs of test, valid, train) of TemporalLOOSplit under ``tie_break``."""
    from ghrs.data.movielens import load_movielens

    ds = load_movielens("ml-100k", root=str(root), download=False, data_dirs=[])
    s = TemporalLOOSplit(tie_break=tie_break)(ds)
    raw = lambda df: sorted(zip(ds.user_ids[df["user"]], ds.item_ids[df["item"]]))
    return ds, raw(s.test), raw(s.valid), raw(s.train)


def _latest(ds, key):
    """Per raw user, the raw item with the largest ``key`` among the user's latest-second ratings."""
    r = ds.ratings.assign(u=ds.user_ids[ds.ratings["user"]], i=ds.item_ids[ds.ratings["item"]])
    last = r[r["timestamp"] == r.groupby("user")["timestamp"].transform("max")]
    last = last.assign(k=[key(u, i) for u, i in zip(last["u"], last["i"])])
    return last.sort_values("k").groupby("u")["i"].last()


@pytest.mark.parametrize("tie_break", ["hash", "item"])
def test_temporal_loo_tie_break_is_independent_of_the_file_order(tmp_path, tie_break):
    folder, shuffled, *_ = _tied_ml100k(tmp_path)
    ds, *a = _loo_raw(folder, tie_break)
    _, *b = _loo_raw(shuffled, tie_break)
    last = ds.ratings.groupby("user")["timestamp"].transform("max") == ds.ratings["timestamp"]
    assert (ds.ratings[last].groupby("user").size() > 1).sum() >= 10  # the ties are really there
    assert a == b
    if tie_break == "item":  # the tie goes to the largest item id among the latest ratings
        key = lambda u, i: i
    else:  # ... to the largest hash of the raw (user, item) pair
        key = lambda u, i: pd.util.hash_pandas_object(pd.DataFrame({"u": [str(u)], "i": [str(i)]}), index=False)[0]
    test = dict(a[0])
    assert all(test[u] == i for u, i in _latest(ds, key).items())


def test_temporal_loo_file_tie_break_follows_the_row_order(tmp_path):
    """``file``: among same-second ratings the one on the latest line is held out, so shuffling the lines
    moves test items (only those of tied users); ``hash`` and ``item`` hold out other items than ``file``."""
    folder, shuffled, lines, perm = _tied_ml100k(tmp_path)
    ds, *a = _loo_raw(folder, "file")
    _, *b = _loo_raw(shuffled, "file")
    line_of = {(int(u), int(i)): k for k, (u, i, *_) in enumerate(line.split("\t") for line in lines)}
    assert all(dict(a[0])[u] == i for u, i in _latest(ds, lambda u, i: line_of[(u, i)]).items())
    where = {k: pos for pos, k in enumerate(perm)}  # original line -> line in the shuffled file
    assert all(dict(b[0])[u] == i for u, i in _latest(ds, lambda u, i: where[line_of[(u, i)]]).items())
    assert a[0] != b[0]
    assert _loo_raw(folder, "hash")[1] != a[0] != _loo_raw(folder, "item")[1]


def test_tie_break_config_errors():
    from ghrs.errors import ConfigError

    with pytest.raises(ConfigError, match=r"split.tie_break must be one of \['hash', 'item', 'file'\], got 'id'"):
        TemporalLOOSplit(tie_break="id")
    ds = make_synthetic(n_users=10, n_items=10, seed=0)
    ds.source_line = None  # e.g. a dataset rebuilt from an artefact
    with pytest.raises(ConfigError, match="split.tie_break=file needs the ratings' file order"):
        TemporalLOOSplit(tie_break="file")(ds)
