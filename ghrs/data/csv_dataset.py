"""Any ratings CSV (music, products, ...) with optional side tables and ready-made train/test files.

Side tables: one id column (named like the ratings' user/item column, or ``id``) plus feature columns;
numbers are used as numbers, strings one-hot, ``|``-separated values multi-hot, ``title`` for display
(see :mod:`ghrs.data.side_features`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ghrs.data.build import build_dataset, validate_ratings
from ghrs.data.csv_table import read_csv_strict
from ghrs.data.dataset import DataError, RatingsDataset
from ghrs.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_COLUMNS = {"user": "user", "item": "item", "rating": "rating", "timestamp": "timestamp"}


def _read(path: str, sep: str) -> pd.DataFrame:
    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return read_csv_strict(path, sep)


def _read_ratings(path: str, sep: str, columns: dict, scale: tuple[float, float]) -> pd.DataFrame:
    table = _read(path, sep)
    rename = {}
    for key in ("user", "item", "rating"):
        name = columns[key]
        if name not in table.columns:
            raise DataError(f"missing column '{name}' (dataset.columns.{key}); the file has {list(table.columns)}", path)
        rename[name] = key
    ts = columns.get("timestamp")
    if ts and ts in table.columns:
        rename[ts] = "timestamp"
    elif ts:
        log.info("%s: no '%s' column: row order is used as time", path, ts)
    table = table.rename(columns=rename)[list(rename.values())]
    return validate_ratings(table, path, scale, first_line=2)


def _read_side(path: str | None, sep: str, id_column: str) -> pd.DataFrame | None:
    if not path:
        return None
    table = _read(path, sep)
    for cand in (id_column, "id"):
        if cand in table.columns:
            table = table.rename(columns={cand: "id"})
            break
    else:
        raise DataError(f"side table needs an id column '{id_column}' or 'id'; it has {list(table.columns)}", path)
    # Numeric-looking columns become numbers; others stay strings (one-hot / multi-hot later).
    for col in table.columns:
        if col == "title":
            continue
        converted = pd.to_numeric(table[col], errors="coerce")
        if converted.notna().sum() == table[col].notna().sum():
            table[col] = converted
    return table


def _coerce_ids(columns: list[tuple[pd.DataFrame | None, str]]) -> None:
    """Give one kind of id (user or item) one type in every table: integers when all parse, else strings."""
    present = [(t, c) for t, c in columns if t is not None and c in t.columns]
    numeric = all(pd.to_numeric(t[c], errors="coerce").notna().all() for t, c in present)
    for t, c in present:
        t[c] = pd.to_numeric(t[c]).astype("int64") if numeric else t[c].astype(str)


def load_csv(
    ratings: str | None = None,
    train: str | None = None,
    test: str | None = None,
    users: str | None = None,
    items: str | None = None,
    columns: dict | None = None,
    sep: str = ",",
    rating_scale: tuple[float, float] = (1.0, 5.0),
    duplicates: str = "error",
    name: str | None = None,
) -> RatingsDataset:
    """Load ratings from ``ratings``, or from ready-made ``train`` + ``test`` files (fold ``given``)."""
    cols = {**DEFAULT_COLUMNS, **(dict(columns) if columns else {})}
    scale = (float(rating_scale[0]), float(rating_scale[1]))
    if scale[0] >= scale[1]:
        raise ConfigError(f"dataset.rating_scale must be [min, max] with min < max, got {list(rating_scale)}")
    if ratings and (train or test):
        raise ConfigError("give either dataset.ratings or dataset.train + dataset.test, not both")
    folds = {}
    if ratings:
        table = _read_ratings(ratings, sep, cols, scale)
        source = ratings
    elif train and test:
        tr = _read_ratings(train, sep, cols, scale)
        te = _read_ratings(test, sep, cols, scale)
        _coerce_ids([(tr, "user"), (te, "user")])
        _coerce_ids([(tr, "item"), (te, "item")])
        overlap = tr.merge(te, on=["user", "item"])
        if len(overlap):
            first = overlap.iloc[0]
            raise DataError(
                f"{len(overlap)} (user, item) pairs are in both train and test, e.g. ({first['user']}, {first['item']}): "
                "a leak; remove them from one file", test, int(first["_line_y"]))
        te = te.assign(_line=te["_line"] + 10**9)  # keep line numbers distinct from train's
        table = pd.concat([tr, te], ignore_index=True)
        folds["given"] = te[["user", "item"]]
        source = train
    else:
        raise ConfigError("dataset=csv needs dataset.ratings, or both dataset.train and dataset.test")
    user_side = _read_side(users, sep, cols["user"])
    item_side = _read_side(items, sep, cols["item"])
    _coerce_ids([(table, "user"), (user_side, "id"), *[(f, "user") for f in folds.values()]])
    _coerce_ids([(table, "item"), (item_side, "id"), *[(f, "item") for f in folds.values()]])
    return build_dataset(
        name or Path(source).stem, table, user_side, item_side, scale, duplicates, source, folds
    )
