import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghrs.data.csv_dataset import load_csv
from ghrs.data.dataset import DataError
from ghrs.data.side_features import encode_side_table

COLS = {"user": "uid", "item": "song", "rating": "stars", "timestamp": "ts"}


def write(path, text):
    path.write_text(text)
    return str(path)


def test_csv_with_side_tables_and_string_ids(tmp_path):
    r = write(tmp_path / "r.csv", "uid,song,stars,ts\na,s1,4,10\na,s2,5,11\nb,s1,3,12\nb,s3,1,13\nc,s2,2,14\n")
    u = write(tmp_path / "u.csv", "uid,country,age\na,UK,30\nb,FR,40\nd,UK,22\n")
    i = write(tmp_path / "i.csv", "song,title,tags\ns1,One,rock|pop\ns2,Two,pop\ns3,Three,jazz\ns4,Four,rock\n")
    ds = load_csv(r, users=u, items=i, columns=COLS)
    assert list(ds.user_ids) == ["a", "b", "c", "d"]  # d: side info only, still indexed (cold user)
    assert list(ds.item_ids) == ["s1", "s2", "s3", "s4"]
    assert len(ds.ratings) == 5 and ds.item_titles(np.array([0, 3])) == ["One", "Four"]
    x, names = encode_side_table(ds.items)
    assert names == ["tags=jazz", "tags=pop", "tags=rock"]  # multi-hot; title is display only
    assert x[0].tolist() == [0, 1, 1]
    xu, unames = encode_side_table(ds.users)
    assert "age" in unames and "country=UK" in unames and xu.shape == (4, 3)


@pytest.mark.parametrize(
    "text, message",
    [
        ("uid,song,stars\na,s1,4\nb,s2,abc\n", r"line 3: rating 'abc' is not a number"),
        ("uid,song\na,s1\n", r"missing column 'stars'"),
        ("uid,song,stars\na,s1,4\nb,s2,9\n", r"line 3: rating 9 outside the declared scale"),
        ("uid,song,stars\na,s1,4\na,s1,5\n", r"line 2: duplicate rating for \(user=a, item=s1\)"),
        ("", r"empty file"),
        ("uid,song,stars\n", r"no ratings"),
        ("uid,song,stars\n,s1,4\n", r"line 2: missing user id"),
        ("uid,song,stars\na,s1,4\nb,s2,5,7\n", r"line 3: 4 fields where the header has 3: an extra field"),
    ],
)
def test_malformed_input_names_file_line_problem(tmp_path, text, message):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=message) as err:
        load_csv(path, columns=COLS)
    assert "bad.csv" in str(err.value)


def test_duplicate_policies(tmp_path, caplog):
    path = write(tmp_path / "d.csv", "uid,song,stars,ts\na,s1,4,1\na,s1,2,5\nb,s1,3,2\n")
    last = load_csv(path, columns=COLS, duplicates="last")
    mean = load_csv(path, columns=COLS, duplicates="mean")
    assert len(last.ratings) == len(mean.ratings) == 2
    assert last.ratings.query("user == 0").rating.item() == 2.0
    assert mean.ratings.query("user == 0").rating.item() == 3.0
    assert "1 duplicated (user, item) pairs resolved with policy 'mean'" in caplog.text
    with pytest.raises(ValueError, match="dataset.duplicates must be one of"):
        load_csv(path, columns=COLS, duplicates="first")


def test_train_test_files_make_the_given_fold(tmp_path):
    tr = write(tmp_path / "train.csv", "user,item,rating\n1,10,4\n1,11,3\n2,10,5\n")
    te = write(tmp_path / "test.csv", "user,item,rating\n2,11,2\n3,10,4\n")
    ds = load_csv(train=tr, test=te)
    assert list(ds.folds) == ["given"] and len(ds.folds["given"]) == 2
    test_pairs = ds.ratings.iloc[ds.folds["given"]]
    assert set(zip(ds.user_ids[test_pairs.user], ds.item_ids[test_pairs.item])) == {(2, 11), (3, 10)}
    leak = write(tmp_path / "leak.csv", "user,item,rating\n1,10,2\n")
    with pytest.raises(DataError, match="in both train and test"):
        load_csv(train=tr, test=leak)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5)), min_size=1, max_size=30))
def test_parser_roundtrip_property(tmp_path_factory, rows):
    """Whatever valid rows go in, the dataset holds exactly the de-duplicated (last wins) pairs."""
    path = tmp_path_factory.mktemp("p") / "r.csv"
    pd.DataFrame(rows, columns=["user", "item", "rating"]).to_csv(path, index=False)
    ds = load_csv(str(path), duplicates="last")
    expected = {}
    for u, i, r in rows:
        expected[(u, i)] = r
    got = {(ds.user_ids[u], ds.item_ids[i]): r for u, i, r in ds.ratings[["user", "item", "rating"]].itertuples(index=False)}
    assert got == expected
