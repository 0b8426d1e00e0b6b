"""MovieLens (100K, 1M, 10M, 20M, 25M, latest-small): parse a release found by :mod:`ghrs.data.releases`
(a local copy in ``dataset.root`` / ``$GHRS_DATA_DIR`` or ``data/``, a remembered copy, the cache, or a
download).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ghrs.data.build import build_dataset, field_count_error, field_count_problem, validate_ratings
from ghrs.data.dataset import DataError, RatingsDataset
from ghrs.data.releases import RELEASES, ReleaseFiles, locate
from ghrs.paths import default_cache_dir

log = logging.getLogger(__name__)

ML100K_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
]


def _read_table(files: ReleaseFiles, name: str, sep: str, columns: list[str], encoding: str = "latin-1") -> pd.DataFrame:
    raw = files.read(name)
    try:
        if len(sep) > 1:  # '::' -- split by hand (the C parser takes one-character separators only)
            lines = raw.decode(encoding).splitlines()
            rows = [line.split(sep) for line in lines if line]
            bad = next((k for k, r in enumerate(rows) if len(r) != len(columns)), None)
            if bad is not None:
                raise DataError(f"expected {len(columns)} fields separated by '{sep}', got {len(rows[bad])}",
                                files.label(name), bad + 1)
            return pd.DataFrame(rows, columns=columns, dtype=str)
        # pandas would silently turn surplus leading fields into an index: count fields first
        problem = field_count_problem(raw, sep, len(columns))
        if problem is not None:
            raise field_count_error(files.label(name), *problem, columns)
        return pd.read_csv(io.BytesIO(raw), sep=sep, header=None, names=columns, dtype=str,
                           encoding=encoding, keep_default_na=False, na_values=[""])
    except pd.errors.ParserError as err:
        raise DataError(f"malformed row: {err}", files.label(name)) from err


def _read_ratings(files: ReleaseFiles, name: str, sep: str, scale: tuple[float, float] = (1.0, 5.0)) -> pd.DataFrame:
    cols = ["user", "item", "rating", "timestamp"]
    if sep == "::":
        # All-numeric file: split on ':' with the fast C parser, keeping every other field.
        raw = files.read(name)
        problem = field_count_problem(raw, sep, len(cols))
        if problem is not None:
            raise field_count_error(files.label(name), *problem, cols)
        try:
            table = pd.read_csv(io.BytesIO(raw), sep=":", header=None, dtype=str, usecols=[0, 2, 4, 6])
        except (pd.errors.ParserError, ValueError) as err:
            raise DataError(f"malformed row: {err}", files.label(name)) from err
        table.columns = cols
    else:
        table = _read_table(files, name, sep, cols)
    ratings = validate_ratings(table, files.label(name), scale)
    for col in ("user", "item"):
        ids = pd.to_numeric(ratings[col], errors="coerce")
        if ids.isna().any():
            row = int(np.flatnonzero(ids.isna().to_numpy())[0])
            raise DataError(f"{col} id {ratings[col].iloc[row]!r} is not an integer", files.label(name), row + 1)
        ratings[col] = ids.astype(np.int64)
    return ratings


def _read_ratings_csv(files: ReleaseFiles, name: str) -> pd.DataFrame:
    """``userId,movieId,rating,timestamp`` with a header (ML-20M, ML-25M, ml-latest)."""
    raw = files.read(name)
    try:  # typed fast path; on any problem re-read as text so the error can name the line
        table = pd.read_csv(io.BytesIO(raw), dtype={"userId": np.int64, "movieId": np.int64,
                                                   "rating": np.float32, "timestamp": np.int64})
        table.columns = ["user", "item", "rating", "timestamp"]
    except (ValueError, pd.errors.ParserError):
        table = pd.read_csv(io.BytesIO(raw), dtype=str)
        table.columns = ["user", "item", "rating", "timestamp"][: len(table.columns)]
    ratings = validate_ratings(table, files.label(name), (0.5, 5.0), first_line=2)
    for col in ("user", "item"):
        ratings[col] = pd.to_numeric(ratings[col]).astype(np.int64)
    return ratings


def _year_from_title(titles: pd.Series) -> pd.Series:
    return titles.str.extract(r"\((\d{4})\)\s*$", expand=False).astype(float)


def _load_100k(files: ReleaseFiles) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    ratings = _read_ratings(files, "u.data", "\t")
    users = _read_table(files, "u.user", "|", ["id", "age", "gender", "occupation", "zip"])
    users["id"] = users["id"].astype(np.int64)
    users["age"] = pd.to_numeric(users["age"], errors="coerce")
    genre_names = [g.split("|")[0] for g in files.read("u.genre").decode("latin-1").splitlines() if g.strip()]
    cols = ["id", "title", "release", "video_release", "url", *genre_names]
    items = _read_table(files, "u.item", "|", cols)
    flags = items[genre_names].fillna("0").astype(int).to_numpy().astype(bool)
    items = pd.DataFrame({
        "id": items["id"].astype(np.int64),
        "title": items["title"].fillna("").astype(str),
        "year": pd.to_datetime(items["release"], format="%d-%b-%Y", errors="coerce").dt.year.astype(float),
        "genres": ["|".join(g for g, f in zip(genre_names, row) if f) for row in flags],
    })
    items["year"] = items["year"].fillna(_year_from_title(items["title"]))
    folds = {}
    for fold in ML100K_FOLDS:
        if f"{fold}.test" in files.members:
            t = _read_table(files, f"{fold}.test", "\t", ["user", "item", "rating", "timestamp"])
            folds[fold] = t[["user", "item"]].astype(np.int64)
    return ratings, users, items, folds


def _load_1m(files: ReleaseFiles) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    ratings = _read_ratings(files, "ratings.dat", "::")
    users = _read_table(files, "users.dat", "::", ["id", "gender", "age", "occupation", "zip"])
    users["id"] = users["id"].astype(np.int64)
    # ML-1M ages are bin codes (1: <18, 18: 18-24, 25, 35, 45, 50, 56+): kept as the bin's lower bound.
    users["age"] = pd.to_numeric(users["age"], errors="coerce")
    occ = pd.to_numeric(users["occupation"], errors="coerce")
    users["occupation"] = [ML1M_OCCUPATIONS[int(o)] if pd.notna(o) and 0 <= o < 21 else "other" for o in occ]
    users = users[["id", "age", "gender", "occupation", "zip"]]
    items = _read_table(files, "movies.dat", "::", ["id", "title", "genres"])
    items["id"] = items["id"].astype(np.int64)
    items["year"] = _year_from_title(items["title"])
    return ratings, users, items[["id", "title", "year", "genres"]], {}


def _load_large(files: ReleaseFiles) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame, dict]:
    if "ratings.dat" in files.members:  # ML-10M: '::' files, no users.dat
        ratings = _read_ratings(files, "ratings.dat", "::", (0.5, 5.0))
        items = _read_table(files, "movies.dat", "::", ["id", "title", "genres"])
    else:
        ratings = _read_ratings_csv(files, "ratings.csv")
        items = pd.read_csv(io.BytesIO(files.read("movies.csv")), dtype=str, encoding="utf-8")
        items.columns = ["id", "title", "genres"]
    items["id"] = items["id"].astype(np.int64)
    items["year"] = _year_from_title(items["title"])
    items["genres"] = items["genres"].replace("(no genres listed)", "")
    return ratings, None, items[["id", "title", "year", "genres"]], {}


def load_movielens(
    name: str = "ml-100k",
    root: str | None = None,
    cache_dir: str | None = None,
    download: bool = True,
    duplicates: str = "error",
    data_dirs: list[str] | None = None,
) -> RatingsDataset:
    """Load a MovieLens release, ``name`` a key of ``RELEASES``.

    Where it is looked for: :func:`ghrs.data.releases.locate` (``data_dirs``: the folders searched
    after ``root``; default the checkout's ``data/`` and ``./data``).
    """
    dirs = [Path(d) for d in data_dirs] if data_dirs is not None else None
    files = locate(name, root, Path(cache_dir) if cache_dir else default_cache_dir(), download, dirs)
    loader = {"ml-100k": _load_100k, "ml-1m": _load_1m}.get(name, _load_large)
    ratings, users, items, folds = loader(files)
    scale = (1.0, 5.0) if name in ("ml-100k", "ml-1m") else (0.5, 5.0)
    if users is None:
        log.info("%s has no user demographics: user side features are empty (GHRS uses graph features only)", name)
    # Side tables may list users/items without ratings in a partial copy: keep only rated ones + known.
    expected = RELEASES[name]["n_ratings"]
    label = name
    if expected is not None and len(ratings) != expected:
        n_users = ratings["user"].nunique()
        label = f"{name} subset ({n_users:,} users, {len(ratings):,} ratings)"
        log.warning("%s: %s has %d ratings, the release has %d: reporting it as '%s'",
                    name, files.path, len(ratings), expected, label)
        if users is not None:
            users = users[users["id"].isin(ratings["user"])]
    label_file = files.label(RELEASES[name]["files"][0])
    ds = build_dataset(label, ratings, users, items, scale, duplicates, label_file, folds)
    log.info("%s", ds.summary())
    return ds

