"""Validate raw tables and assemble a :class:`RatingsDataset` (shared by every loader)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ghrs.data.dataset import DataError, RatingsDataset, remap_ids

log = logging.getLogger(__name__)

DUPLICATE_POLICIES = ("error", "last", "mean")


def field_count_problem(raw: bytes, sep: str, n_fields: int) -> tuple[int, int] | None:
    """First non-blank line (1-based) of a separated text file with other than ``n_fields`` fields.

    Returns ``(line, fields)`` or None. ``sep`` is one character, or ``::`` for files whose fields hold
    no ``:`` (MovieLens ``ratings.dat``). Vectorised over the bytes (no per-line Python loop).
    """
    data = np.frombuffer(raw, np.uint8)
    ends = np.flatnonzero(data == 10)
    if len(data) and data[-1] != 10:
        ends = np.append(ends, len(data))
    starts = np.concatenate([[0], ends[:-1] + 1])
    width = 1 if len(sep) == 1 else 2
    pos = np.flatnonzero(data == ord(sep[0]))
    per_line = np.diff(np.searchsorted(pos, ends), prepend=0)  # separator bytes on each line
    nonblank = (ends - starts) > (data[np.maximum(ends - 1, 0)] == 13)  # ignore empty and "\r"-only lines
    bad = np.flatnonzero(nonblank & (per_line != width * (n_fields - 1)))
    if not len(bad):
        return None
    k = int(bad[0])
    return k + 1, int(per_line[k]) // width + 1


def field_count_error(file: str, line: int, fields: int, columns: list[str]) -> DataError:
    kind = "an extra field" if fields > len(columns) else "a missing field"
    return DataError(f"{fields} fields where {len(columns)} are expected ({', '.join(columns)}): {kind}", file, line)


def validate_ratings(
    raw: pd.DataFrame,
    file: str,
    rating_scale: tuple[float, float],
    first_line: int = 1,
) -> pd.DataFrame:
    """Check a raw ratings table (columns user, item, rating[, timestamp]) and coerce its types.

    ``first_line`` is the file line number of ``raw``'s first row (2 for a CSV with a header), so
    errors point at the offending line. Returns a copy with ``rating`` float32 and ``timestamp`` int64
    (the row order when the file has no timestamps).
    """
    if len(raw) == 0:
        raise DataError("no ratings (empty file)", file)
    for col in ("user", "item", "rating"):
        if col not in raw.columns:
            raise DataError(f"missing column '{col}' (have {list(raw.columns)})", file)
    out = pd.DataFrame(index=raw.index)
    for col in ("user", "item"):
        missing = raw[col].isna().to_numpy()
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise DataError(f"missing {col} id", file, first_line + row)
        out[col] = raw[col]
    rating = pd.to_numeric(raw["rating"], errors="coerce")
    bad = rating.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"rating {raw['rating'].iloc[row]!r} is not a number", file, first_line + row)
    lo, hi = rating_scale
    outside = ((rating < lo) | (rating > hi)).to_numpy()
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise DataError(
            f"rating {rating.iloc[row]} outside the declared scale [{lo}, {hi}] "
            f"({int(outside.sum())} such rows; set dataset.rating_scale)",
            file,
            first_line + row,
        )
    out["rating"] = rating.astype(np.float32)
    if "timestamp" in raw.columns and raw["timestamp"].notna().any():
        ts = pd.to_numeric(raw["timestamp"], errors="coerce")
        bad = ts.isna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"timestamp {raw['timestamp'].iloc[row]!r} is not a number", file, first_line + row)
        out["timestamp"] = ts.astype(np.int64)
    else:
        out["timestamp"] = np.arange(len(raw), dtype=np.int64)
    out["_line"] = np.arange(first_line, first_line + len(raw), dtype=np.int64)
    return out.reset_index(drop=True)


def resolve_duplicates(ratings: pd.DataFrame, policy: str, file: str) -> pd.DataFrame:
    """Apply the duplicate (user, item) policy: ``error`` | ``last`` (latest timestamp wins) | ``mean``."""
    if policy not in DUPLICATE_POLICIES:
        raise ValueError(f"dataset.duplicates must be one of {DUPLICATE_POLICIES}, got {policy!r}")
    dup = ratings.duplicated(["user", "item"], keep=False).to_numpy()
    if not dup.any():
        return ratings
    n_pairs = int(ratings[dup].groupby(["user", "item"]).ngroups)
    if policy == "error":
        first = ratings[dup].iloc[0]
        raise DataError(
            f"duplicate rating for (user={first['user']}, item={first['item']}); {n_pairs} duplicated "
            "pairs in all (set dataset.duplicates=last|mean to resolve them)",
            file,
            int(first["_line"]),
        )
    if policy == "last":
        out = ratings.sort_values(["timestamp", "_line"]).drop_duplicates(["user", "item"], keep="last")
    else:
        out = ratings.groupby(["user", "item"], as_index=False, sort=False).agg(
            rating=("rating", "mean"), timestamp=("timestamp", "max"), _line=("_line", "min")
        )
        out["rating"] = out["rating"].astype(np.float32)
    log.warning(
        "%s: %d duplicated (user, item) pairs resolved with policy '%s' (%d -> %d rows)",
        file, n_pairs, policy, len(ratings), len(out),
    )
    return out.reset_index(drop=True)


def build_dataset(
    name: str,
    ratings: pd.DataFrame,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    rating_scale: tuple[float, float] = (1.0, 5.0),
    duplicates: str = "error",
    file: str = "<ratings>",
    folds: dict[str, pd.DataFrame] | None = None,
) -> RatingsDataset:
    """Assemble a dataset from validated raw tables.

    Args:
        ratings: output of :func:`validate_ratings` (raw ids in ``user``/``item``).
        users, items: side tables with the raw id in column ``id``; ids that appear only in a side
            table still get an index (cold users/items with side information).
        folds: optional predefined test sets, name -> DataFrame of raw ``user``/``item`` pairs.
    """
    ratings = resolve_duplicates(ratings, duplicates, file)
    user_extra = users["id"] if users is not None and len(users) else None
    item_extra = items["id"] if items is not None and len(items) else None
    uidx, user_ids = remap_ids(ratings["user"], user_extra)
    iidx, item_ids = remap_ids(ratings["item"], item_extra)
    table = pd.DataFrame(
        {
            "user": uidx,
            "item": iidx,
            "rating": ratings["rating"].to_numpy(np.float32),
            "timestamp": ratings["timestamp"].to_numpy(np.int64),
        }
    )
    # Canonical order: by user, then time, then item index (ties in time broken by item id, so the order
    # never depends on the file's row order); sequence models and splits rely on it.
    order = np.lexsort((table["item"].to_numpy(), table["timestamp"].to_numpy(), table["user"].to_numpy()))
    table = table.iloc[order].reset_index(drop=True)
    users_t = _align_side(users, user_ids, "user")
    items_t = _align_side(items, item_ids, "item")
    ds = RatingsDataset(name, table, user_ids, item_ids, users_t, items_t, tuple(map(float, rating_scale)),
                        source_line=ratings["_line"].to_numpy(np.int64)[order] if "_line" in ratings else None)
    for fold_name, pairs in (folds or {}).items():
        ds.folds[fold_name] = _fold_rows(ds, pairs, fold_name)
    return ds


def _align_side(side: pd.DataFrame | None, ids: np.ndarray, kind: str) -> pd.DataFrame:
    if side is None or len(side) == 0:
        return pd.DataFrame(index=pd.RangeIndex(len(ids)))
    if side["id"].duplicated().any():
        dup = side["id"][side["id"].duplicated()].iloc[0]
        raise DataError(f"{kind} side table lists id {dup!r} more than once")
    side = side.set_index("id")
    side.index = side.index.astype(ids.dtype) if ids.dtype.kind in "iu" else side.index
    aligned = side.reindex(ids)
    aligned.index = pd.RangeIndex(len(ids))
    return aligned


def _fold_rows(ds: RatingsDataset, pairs: pd.DataFrame, fold_name: str) -> np.ndarray:
    """Row indices into ``ds.ratings`` of the (raw user, raw item) pairs of a predefined test set."""
    u = ds.user_index(pairs["user"].to_numpy())
    i = ds.item_index(pairs["item"].to_numpy())
    key = ds.ratings["user"].to_numpy() * ds.n_items + ds.ratings["item"].to_numpy()
    want = u * ds.n_items + i
    pos = pd.Index(key).get_indexer(want)
    if (pos < 0).any():
        raise DataError(f"fold '{fold_name}' lists {int((pos < 0).sum())} pairs absent from the ratings")
    return np.sort(pos)
