"""Parse the CSV files a user gives to a trained run (``ghrs.predict``): pairs, history, side information.

Every problem is a :class:`~ghrs.data.dataset.DataError` naming the file, the line (the header is line 1)
and the column: an empty id, ``abc`` or ``1.5`` where the model's ids are integers, a rating that is no
number or lies outside the scale, a row with more fields than the header. Given the run's dataset, ids
come back with the dtype of the model's ids and side columns that the model holds as numbers come back
as numbers; unknown ids and unseen side values are checked later, against the model.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ghrs.data.csv_table import read_csv_strict
from ghrs.data.dataset import DataError, RatingsDataset

_INT = re.compile(r"^[+-]?\d+$")


def _read(path: str | Path, sep: str, required: tuple[str, ...], what: str) -> pd.DataFrame:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"no such file (the {what} CSV)", str(path))
    try:
        table = read_csv_strict(p, sep, skip_blank_lines=False)
    except DataError as err:
        if err.problem == "empty file":
            raise DataError(f"empty file; the {what} CSV needs a header with {', '.join(required)}", str(p)) from err
        raise
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; the {what} CSV needs {list(required)} and has "
                        f"{list(table.columns)}", str(p))
    table.index = pd.RangeIndex(2, len(table) + 2)  # file line of each row
    return table[table.notna().any(axis=1)]  # blank lines carry no row


def _first_bad(table: pd.DataFrame, bad: np.ndarray) -> int:
    return int(table.index[np.flatnonzero(bad)[0]])


def _ids(table: pd.DataFrame, col: str, file: str, known: np.ndarray | None) -> np.ndarray:
    """Column ``col`` as ids: never empty; integers when the model's ids are integers."""
    values = table[col]
    empty = values.isna().to_numpy() | (values.fillna("").str.strip() == "").to_numpy()
    if empty.any():
        raise DataError(f"column {col}: empty id", file, _first_bad(table, empty))
    text = values.str.strip()
    if known is None or known.dtype.kind not in "iu":
        return text.to_numpy(dtype=object)
    bad = ~text.str.fullmatch(_INT).to_numpy(dtype=bool)
    if bad.any():
        line = _first_bad(table, bad)
        raise DataError(f"column {col}: {values.loc[line]!r} is not an integer id (the model's {col} ids are "
                        "integers)", file, line)
    return text.astype(np.int64).to_numpy()


def _numbers(table: pd.DataFrame, col: str, file: str, lo: float = -np.inf, hi: float = np.inf,
             integer: bool = False, allow_empty: bool = False) -> np.ndarray:
    values = table[col]
    num = pd.to_numeric(values.str.strip(), errors="coerce").to_numpy(dtype=float)
    empty = values.isna().to_numpy()
    bad = np.isnan(num) & ~(empty & allow_empty)
    if bad.any():
        line = _first_bad(table, bad)
        shown = "empty" if empty[np.flatnonzero(bad)[0]] else f"{values.loc[line]!r} is not a number"
        raise DataError(f"column {col}: {shown}", file, line)
    ok = np.isnan(num) | ((num >= lo) & (num <= hi))
    if integer:
        ok &= np.isnan(num) | (num == np.round(num))
    if not ok.all():
        line = _first_bad(table, ~ok)
        want = "an integer" if integer else f"a number in [{lo:g}, {hi:g}]"
        raise DataError(f"column {col}: {values.loc[line]!r} is not {want}", file, line)
    return num


def read_pairs(path: str | Path | None, sep: str = ",", dataset: RatingsDataset | None = None) -> pd.DataFrame | None:
    """``user,item`` rows (raw ids) to predict; ``None`` passes through."""
    if path is None:
        return None
    table = _read(path, sep, ("user", "item"), "pairs")
    known = (dataset.user_ids, dataset.item_ids) if dataset is not None else (None, None)
    return pd.DataFrame({"user": _ids(table, "user", str(path), known[0]),
                         "item": _ids(table, "item", str(path), known[1])})


def read_history(path: str | Path | None, sep: str = ",", dataset: RatingsDataset | None = None) -> pd.DataFrame | None:
    """``user,item,rating[,timestamp]`` rows of users to fold in; empty timestamps continue the history."""
    if path is None:
        return None
    file = str(path)
    table = _read(path, sep, ("user", "item", "rating"), "history")
    lo, hi = dataset.rating_scale if dataset is not None else (-np.inf, np.inf)
    known = (dataset.user_ids, dataset.item_ids) if dataset is not None else (None, None)
    out = pd.DataFrame({"user": _ids(table, "user", file, known[0]), "item": _ids(table, "item", file, known[1]),
                        "rating": _numbers(table, "rating", file, lo, hi)})
    if "timestamp" in table.columns:
        out["timestamp"] = _numbers(table, "timestamp", file, integer=True, allow_empty=True)
    return out


def read_side(path: str | Path | None, sep: str = ",", dataset: RatingsDataset | None = None) -> pd.DataFrame | None:
    """``id,<side columns>`` rows of users to fold in; columns the model holds as numbers are parsed as numbers."""
    if path is None:
        return None
    file = str(path)
    table = _read(path, sep, ("id",), "side")
    out = pd.DataFrame({"id": _ids(table, "id", file, dataset.user_ids if dataset is not None else None)})
    for col in table.columns.drop("id"):
        numeric = dataset is not None and col in dataset.users.columns and \
            pd.api.types.is_numeric_dtype(dataset.users[col])
        values = _numbers(table, col, file, allow_empty=True) if numeric else table[col].str.strip().to_numpy(dtype=object)
        out[col] = values
    return out
