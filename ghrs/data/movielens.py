"""MovieLens (100K, 1M, 10M, 20M, 25M, latest-small): find a local copy (directory or zip) or download it, then parse.

Sources, in order:
1. ``root`` (config ``dataset.root``) or the ``GHRS_DATA_DIR`` environment variable: a directory
   holding ``ml-100k/`` / ``ml-100k.zip`` (or the files themselves), or a zip file;
2. the cache directory (``data/cache`` in the project by default);
3. a download from GroupLens into the cache, checked against the release's md5.

A local copy is checked by content (files present, row counts), since re-zipped copies have other md5s.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ghrs.data.build import build_dataset, validate_ratings
from ghrs.data.dataset import DataError, RatingsDataset

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(__file__).resolve().parents[2] / "data" / "cache"

RELEASES = {
    "ml-100k": {
        "url": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "md5": "0e33842e24a9c977be4e0107933c0723",
        "files": ("u.data", "u.user", "u.item", "u.genre"),
        "n_ratings": 100_000,
    },
    "ml-1m": {
        "url": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "md5": "c4d9eecfca2ab87c1945afe126590906",
        "files": ("ratings.dat", "users.dat", "movies.dat"),
        "n_ratings": 1_000_209,
    },
    # The larger releases have no user demographics (GHRS then runs on graph features alone) and
    # half-star ratings.
    "ml-10m": {
        "url": "https://files.grouplens.org/datasets/movielens/ml-10m.zip",
        "md5": "ce571fd55effeba0271552578f2648bd",
        "files": ("ratings.dat", "movies.dat"),
        "n_ratings": 10_000_054,
    },
    "ml-20m": {
        "url": "https://files.grouplens.org/datasets/movielens/ml-20m.zip",
        "md5": "cd245b17a1ae2cc31bb14903e1204af3",
        "files": ("ratings.csv", "movies.csv"),
        "n_ratings": 20_000_263,
    },
    "ml-25m": {
        "url": "https://files.grouplens.org/datasets/movielens/ml-25m.zip",
        "md5": "6b51fb2759a8657d3bfcbfc42b592ada",
        "files": ("ratings.csv", "movies.csv"),
        "n_ratings": 25_000_095,
    },
    "ml-latest-small": {  # a living release: GroupLens updates it, so there is no fixed md5 or size
        "url": "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
        "md5": None,
        "files": ("ratings.csv", "movies.csv"),
        "n_ratings": None,
    },
}
ML100K_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
]


class _Files:
    """Read-only access to a release's files inside a directory or a zip (any folder depth)."""

    def __init__(self, path: Path, wanted: tuple[str, ...]):
        self.path = path
        self.members: dict[str, str] = {}
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file():
                    self.members.setdefault(f.name, str(f))
        else:
            try:
                with zipfile.ZipFile(path) as zf:
                    bad = zf.testzip()
                    if bad is not None:
                        raise DataError(f"corrupt member {bad} (CRC mismatch)", str(path))
                    for info in zf.infolist():
                        self.members.setdefault(Path(info.filename).name, info.filename)
            except (zipfile.BadZipFile, EOFError, OSError) as err:
                raise DataError(f"not a readable zip (corrupt or truncated download?): {err}", str(path)) from err

    def has(self, names) -> bool:
        return all(n in self.members for n in names)

    def read(self, name: str) -> bytes:
        if name not in self.members:
            raise DataError(f"file {name} not found", str(self.path))
        if self.path.is_dir():
            return Path(self.members[name]).read_bytes()
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(self.members[name])

    def label(self, name: str) -> str:
        return f"{self.path}:{self.members.get(name, name)}"


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _local_candidates(root: Path, name: str) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        log.warning("dataset.root / GHRS_DATA_DIR points at %s, which does not exist", root)
        return []
    found = [root / name, root / f"{name}.zip", root]
    # Fallback: a partial copy named like the release (e.g. ml-1m-users-1-2999.zip); labelled a subset later.
    found += sorted(root.glob(f"{name}-*.zip")) + sorted(p for p in root.glob(f"{name}-*") if p.is_dir())
    return [p for p in found if p.exists()]


def download_release(name: str, cache_dir: Path) -> Path:
    """Download a release zip into ``cache_dir`` with its md5 checked; a bad file is removed."""
    from torch_geometric.data import download_url  # a well-kept helper with retries and progress

    spec = RELEASES[name]
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / f"{name}.zip"
    part = download_url(spec["url"], str(cache_dir), log=True, filename=f"{name}.zip.part")
    digest = md5sum(Path(part))
    if spec["md5"] is None:
        _Files(Path(part), spec["files"])  # no published md5: at least check the zip reads back whole
        log.warning("%s has no published md5; downloaded file %s is %s", name, final, digest)
    elif digest != spec["md5"]:
        os.remove(part)
        raise DataError(f"md5 mismatch for the download of {spec['url']}: got {digest}, expected {spec['md5']}; "
                        "the partial file was removed, try again", str(final))
    os.replace(part, final)
    return final


def locate(name: str, root: str | os.PathLike | None, cache_dir: Path, download: bool) -> _Files:
    """Find the release files: local root, cache, then download."""
    if name not in RELEASES:
        raise ValueError(f"dataset.name must be one of {sorted(RELEASES)}, got {name!r}")
    wanted = RELEASES[name]["files"]
    root = root or os.environ.get("GHRS_DATA_DIR") or None
    if root:
        for cand in _local_candidates(Path(root).expanduser(), name):
            files = _Files(cand, wanted)
            if files.has(wanted):
                log.info("%s: reading local copy %s", name, cand)
                return files
        log.warning("%s: no copy with %s under %s; trying the cache", name, wanted, root)
    cached = cache_dir / f"{name}.zip"
    if cached.exists():
        expected = RELEASES[name]["md5"]
        if expected is None or md5sum(cached) == expected:
            return _Files(cached, wanted)
        log.warning("cached %s fails its md5 check: removing it", cached)
        cached.unlink()
    if not download:
        raise FileNotFoundError(f"{name} not found locally (root={root}, cache={cache_dir}) and dataset.download=false")
    return _Files(download_release(name, cache_dir), wanted)


def _read_table(files: _Files, name: str, sep: str, columns: list[str], encoding: str = "latin-1") -> pd.DataFrame:
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
        return pd.read_csv(io.BytesIO(raw), sep=sep, header=None, names=columns, dtype=str,
                           encoding=encoding, keep_default_na=False, na_values=[""])
    except pd.errors.ParserError as err:
        raise DataError(f"malformed row: {err}", files.label(name)) from err


def _read_ratings(files: _Files, name: str, sep: str, scale: tuple[float, float] = (1.0, 5.0)) -> pd.DataFrame:
    cols = ["user", "item", "rating", "timestamp"]
    if sep == "::":
        # All-numeric file: split on ':' with the fast C parser, keeping every other field.
        raw = files.read(name)
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


def _read_ratings_csv(files: _Files, name: str) -> pd.DataFrame:
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


def _load_100k(files: _Files) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
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


def _load_1m(files: _Files) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
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


def _load_large(files: _Files) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame, dict]:
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
) -> RatingsDataset:
    """Load a MovieLens release, ``name`` a key of ``RELEASES`` (see the module docstring for where it is looked for)."""
    files = locate(name, root, Path(cache_dir) if cache_dir else DEFAULT_CACHE, download)
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

