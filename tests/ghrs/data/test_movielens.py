import os
from pathlib import Path

import numpy as np
import pytest

from ghrs.data.dataset import DataError
from ghrs.data.movielens import load_movielens
from tests.ghrs.data.fixtures import write_ml1m, write_ml20m_style, write_ml100k, zip_folder

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"
REAL = Path(os.environ.get("GHRS_DATA_DIR", SHARED))


def test_ml100k_format_from_directory_and_zip(tmp_path):
    folder = write_ml100k(tmp_path / "d")
    a = load_movielens("ml-100k", root=str(tmp_path / "d"), download=False)
    b = load_movielens("ml-100k", root=str(zip_folder(folder, tmp_path / "ml-100k.zip")), download=False)
    n_lines = len((folder / "u.data").read_text().splitlines())
    assert len(a.ratings) == len(b.ratings) == n_lines
    assert a.items["title"].iloc[0].startswith("Café")  # latin-1 decoded
    assert set(a.items.columns) >= {"title", "year", "genres"} and set(a.users.columns) >= {"age", "gender", "occupation"}
    assert np.array_equal(a.ratings.to_numpy(), b.ratings.to_numpy())
    # contiguous indices, raw ids kept
    assert a.ratings["user"].max() == a.n_users - 1 and a.user_ids.dtype.kind == "i"
    assert len(a.folds["u1"]) == len((folder / "u1.test").read_text().splitlines())


def test_ml1m_format(tmp_path):
    folder = write_ml1m(tmp_path)
    ds = load_movielens("ml-1m", root=str(folder), download=False)
    assert len(ds.ratings) == len((folder / "ratings.dat").read_text().splitlines())
    assert ds.items["title"].iloc[0].startswith("Café: The Movie")  # ':' inside a '::' field survives
    assert ds.items["year"].notna().all()
    assert ds.users["occupation"].isin(["other", "academic/educator"]).any()
    assert "subset" in ds.name  # not the full release's 1,000,209 ratings: labelled as such


def test_malformed_ml1m_row_names_file_and_line(tmp_path):
    folder = write_ml1m(tmp_path)
    lines = (folder / "ratings.dat").read_text().splitlines()
    lines[6] = "1::2::x::3"
    (folder / "ratings.dat").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"ratings.dat, line 7: rating 'x' is not a number"):
        load_movielens("ml-1m", root=str(folder), download=False)


def test_rating_out_of_scale_is_an_error(tmp_path):
    folder = write_ml100k(tmp_path)
    lines = (folder / "u.data").read_text().splitlines()
    u, i, _, t = lines[3].split("\t")
    lines[3] = f"{u}\t{i}\t7\t{t}"
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 4: rating 7 outside the declared scale"):
        load_movielens("ml-100k", root=str(tmp_path), download=False)


def test_truncated_zip_is_a_clear_error(tmp_path):
    z = zip_folder(write_ml100k(tmp_path / "d"), tmp_path / "ml-100k.zip")
    data = z.read_bytes()
    z.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_movielens("ml-100k", root=str(z), download=False)


def test_corrupt_cache_file_of_the_user_is_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("GHRS_DATA_DIR", raising=False)  # CI points this at the real data
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "ml-100k.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="fails the ml-100k release's md5.*remove it"):
        load_movielens("ml-100k", root=None, cache_dir=str(cache), download=False, data_dirs=[])
    assert (cache / "ml-100k.zip").read_bytes() == b"not a zip"  # never deleted: the loader did not put it there


def test_unknown_release_name():
    with pytest.raises(ValueError, match="dataset.name must be one of"):
        load_movielens("ml-7k", download=False)


@pytest.mark.realdata
def test_real_ml100k_content():
    if not (REAL / "ml-100k.zip").exists():
        pytest.skip(f"real MovieLens not found at {REAL}")
    ds = load_movielens("ml-100k", root=str(REAL), download=False)
    assert (len(ds.ratings), ds.n_users, ds.n_items) == (100_000, 943, 1682)
    assert {k: len(v) for k, v in ds.folds.items()} == {
        "u1": 20000, "u2": 20000, "u3": 20000, "u4": 20000, "u5": 20000, "ua": 9430, "ub": 9430}
    assert ds.items.loc[0, "title"] == "Toy Story (1995)" and ds.items.loc[0, "year"] == 1995


@pytest.mark.realdata
def test_real_ml1m_subset_content():
    z = REAL / "ml-1m-users-1-2999.zip"
    if not z.exists():
        pytest.skip(f"real ML-1M subset not found at {REAL}")
    ds = load_movielens("ml-1m", root=str(z), download=False)
    assert len(ds.ratings) == 487_650 and ds.n_users == 2999 and ds.n_items == 3883
    assert ds.ratings.groupby("user").size().min() >= 20


def test_csv_style_release_half_stars_and_no_demographics(tmp_path):
    folder = write_ml20m_style(tmp_path)
    ds = load_movielens("ml-latest-small", root=str(tmp_path), download=False)
    assert len(ds.ratings) == len((folder / "ratings.csv").read_text().splitlines()) - 1
    assert ds.rating_scale == (0.5, 5.0) and (ds.ratings["rating"] % 1 == 0.5).all()
    assert ds.users.shape[1] == 0 and ds.items["title"].iloc[0].startswith("Movie, The")
    lines = (folder / "ratings.csv").read_text().splitlines()
    lines[2] = "1,2,oops,5"
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"ratings.csv, line 3: rating 'oops' is not a number"):
        load_movielens("ml-latest-small", root=str(tmp_path), download=False)


@pytest.mark.parametrize("row", [0, 5])
def test_extra_column_in_u_data_is_reported_as_such(tmp_path, row):
    folder = write_ml100k(tmp_path)
    lines = (folder / "u.data").read_text().splitlines()
    lines[row] += "\t881250949"
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"u.data, line {row + 1}: 5 fields where 4 are expected .*an extra field"):
        load_movielens("ml-100k", root=str(tmp_path), download=False)


def test_extra_field_in_ratings_dat_is_reported_as_such(tmp_path):
    folder = write_ml1m(tmp_path)
    lines = (folder / "ratings.dat").read_text().splitlines()
    lines[2] += "::7"
    (folder / "ratings.dat").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"ratings.dat, line 3: 5 fields where 4 are expected"):
        load_movielens("ml-1m", root=str(folder), download=False)


def test_field_count_problem_matches_a_line_by_line_count():
    from hypothesis import given
    from hypothesis import strategies as st

    from ghrs.data.build import field_count_problem

    @given(st.lists(st.lists(st.text("0123456789ab", min_size=0, max_size=3), min_size=1, max_size=6),
                    max_size=12), st.sampled_from(["\t", "|", "::"]), st.integers(1, 6), st.booleans())
    def check(rows, sep, n, trailing):
        raw = "\n".join(sep.join(r) for r in rows) + ("\n" if trailing else "")
        expected = next(((k + 1, len(line.split(sep))) for k, line in enumerate(raw.split("\n"))
                         if line and len(line.split(sep)) != n), None)
        assert field_count_problem(raw.encode(), sep, n) == expected

    check()
