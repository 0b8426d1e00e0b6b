import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghrs.data.dataset import DataError
from ghrs.data.synthetic import make_synthetic
from ghrs.data.user_input import read_history, read_pairs, read_side

DS = make_synthetic(n_users=20, n_items=15, ratings_per_user=5, seed=0)  # integer ids, scale [1, 5]


def write(tmp_path, text, name="in.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "reader, text, message",
    [
        (read_pairs, "user,item\n1,2\n3,abc\n", r"in.csv, line 3: column item: 'abc' is not an integer id"),
        (read_pairs, "user,item\n1.5,2\n", r"line 2: column user: '1.5' is not an integer id"),
        (read_pairs, "user,item\n1,2\n,2\n", r"line 3: column user: empty id"),
        (read_pairs, "user,item\n1,2\n3,4,5\n", r"line 3: 3 fields where the header has 2: an extra field"),
        (read_pairs, "user,item\n1,2,5\n3,4\n", r"line 2: 3 fields where the header has 2: an extra field"),
        (read_pairs, "uid,item\n1,2\n", r"missing column\(s\) \['user'\]"),
        (read_pairs, "", r"empty file; the pairs CSV needs a header with user, item"),
        (read_history, "user,item,rating\n1,2,x\n", r"line 2: column rating: 'x' is not a number"),
        (read_history, "user,item,rating\n1,2,4\n1,3,9\n", r"line 3: column rating: '9' is not a number in \[1, 5\]"),
        (read_history, "user,item,rating\n1,2,\n", r"line 2: column rating: empty"),
        (read_history, "user,item,rating,timestamp\n1,2,4,1.5\n", r"line 2: column timestamp: '1.5' is not an integer"),
        (read_side, "id,age\n7,30\n8,abc\n", r"line 3: column age: 'abc' is not a number"),
    ],
)
def test_every_error_names_file_line_and_column(tmp_path, reader, text, message):
    with pytest.raises(DataError, match=message):
        reader(write(tmp_path, text), ",", DS)


def test_valid_files_parse_with_the_model_id_types(tmp_path):
    pairs = read_pairs(write(tmp_path, "user,item\n 1 ,2\n\n3,4\n"), ",", DS)
    assert pairs["user"].tolist() == [1, 3] and pairs["user"].dtype == np.int64  # blank line skipped
    hist = read_history(write(tmp_path, "user,item,rating,timestamp\n9,2,4.5,\n9,3,1,17\n"), ",", DS)
    assert hist["rating"].tolist() == [4.5, 1.0] and np.isnan(hist["timestamp"][0]) and hist["timestamp"][1] == 17
    side = read_side(write(tmp_path, "id,age,gender\n99,30,F\n98,,M\n"), ",", DS)
    assert side["age"].tolist()[0] == 30.0 and np.isnan(side["age"][1]) and side["gender"].tolist() == ["F", "M"]
    assert read_pairs(None) is None and read_history(None) is None and read_side(None) is None
    strings = read_pairs(write(tmp_path, "user,item\nabc,1.5\n"))  # without a model: ids stay strings
    assert strings.to_dict("records") == [{"user": "abc", "item": "1.5"}]


ids = st.integers(-(10**12), 10**12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(ids, ids), min_size=1, max_size=20))
def test_pairs_roundtrip_property(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("p") / "pairs.csv"
    path.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in rows))
    out = read_pairs(str(path), ",", DS)
    assert list(zip(out["user"].tolist(), out["item"].tolist())) == rows


bad_tokens = st.sampled_from(["abc", "1.5", "", " ", "1e3", "--2", "0x10", "½"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(ids, ids, st.integers(1, 5)), min_size=1, max_size=15), st.data())
def test_a_bad_id_anywhere_is_named_by_line_and_column_property(tmp_path_factory, rows, data):
    row = data.draw(st.integers(0, len(rows) - 1))
    col = data.draw(st.sampled_from(["user", "item"]))
    token = data.draw(bad_tokens)
    cells = [[str(u), str(i), str(r)] for u, i, r in rows]
    cells[row][0 if col == "user" else 1] = token
    path = tmp_path_factory.mktemp("h") / "history.csv"
    path.write_text("user,item,rating\n" + "".join(",".join(c) + "\n" for c in cells), encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_history(str(path), ",", DS)
    assert err.value.line == row + 2 and str(err.value).startswith(f"{path}, line {row + 2}: column {col}: ")
