"""The one in-memory dataset type every loader produces and every model consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ghrs.errors import UnknownIdError, UserError

RATING_COLUMNS = ("user", "item", "rating", "timestamp")


class DataError(UserError, ValueError):
    """Malformed input data; the message names the file, the line (1-based) and the problem."""

    def __init__(self, problem: str, file: str | None = None, line: int | None = None):
        where = ""
        if file is not None:
            where = f"{file}"
            if line is not None:
                where += f", line {line}"
            where += ": "
        super().__init__(where + problem)
        self.file, self.line, self.problem = file, line, problem


@dataclass
class RatingsDataset:
    """Explicit-feedback ratings with optional side tables.

    Attributes:
        name: human-readable name, e.g. ``"ml-100k"``.
        ratings: DataFrame with columns ``user`` (int64 index in ``[0, n_users)``), ``item`` (int64 index
            in ``[0, n_items)``), ``rating`` (float32), ``timestamp`` (int64, seconds). One row per
            (user, item) pair.
        user_ids: raw user ids, shape (n_users,); ``user_ids[u]`` is the id of user index ``u``.
        item_ids: raw item ids, shape (n_items,).
        users: side table indexed by user index (0..n_users-1), any columns (MovieLens: ``age``,
            ``gender``, ``occupation``, ``zip``); may have no columns.
        items: side table indexed by item index (MovieLens: ``title``, ``year``, ``genres`` as a
            ``|``-separated string); may have no columns.
        rating_scale: (min, max) of the declared rating scale.
        folds: predefined train/test splits, name -> row indices (into ``ratings``) of the test part;
            the train part is the complement (ML-100K's u1..u5, ua, ub; ``given`` for CSV train/test).
    """

    name: str
    ratings: pd.DataFrame
    user_ids: np.ndarray
    item_ids: np.ndarray
    users: pd.DataFrame
    items: pd.DataFrame
    rating_scale: tuple[float, float] = (1.0, 5.0)
    folds: dict[str, np.ndarray] = field(default_factory=dict)
    source_line: np.ndarray | None = None  # (n_ratings,) each rating's line in its file(s); None: unknown

    def __post_init__(self) -> None:
        missing = [c for c in RATING_COLUMNS if c not in self.ratings.columns]
        if missing:
            raise DataError(f"ratings table lacks columns {missing}")
        if len(self.users) != len(self.user_ids) or len(self.items) != len(self.item_ids):
            raise ValueError("side tables must have one row per user / item index")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, raw_ids) -> np.ndarray:
        """Map raw user ids to indices; raises ``KeyError`` naming the unknown ids."""
        return _lookup(self.user_ids, raw_ids, "user")

    def item_index(self, raw_ids) -> np.ndarray:
        """Map raw item ids to indices; raises ``KeyError`` naming the unknown ids."""
        return _lookup(self.item_ids, raw_ids, "item")

    def item_titles(self, items: np.ndarray) -> list[str]:
        """Display names for item indices: the ``title`` column if present, else the raw id."""
        if "title" in self.items.columns:
            return [str(t) for t in self.items["title"].to_numpy()[items]]
        return [str(i) for i in self.item_ids[items]]

    def summary(self) -> str:
        r = self.ratings
        density = len(r) / max(1, self.n_users * self.n_items)
        return (
            f"{self.name}: {len(r):,} ratings, {self.n_users:,} users, {self.n_items:,} items "
            f"(density {density:.4f}), scale {self.rating_scale}"
        )


def _lookup(known: np.ndarray, raw_ids, kind: str) -> np.ndarray:
    raw = np.atleast_1d(np.asarray(raw_ids))
    index = pd.Index(known)
    if raw.dtype.kind in "iuf" and index.dtype.kind not in "iuf":
        raw = raw.astype(str)
    elif raw.dtype.kind not in "iuf" and index.dtype.kind in "iu":
        try:
            raw = raw.astype(np.int64)
        except ValueError:
            pass
    pos = index.get_indexer(raw)
    if (pos < 0).any():
        unknown = raw[pos < 0][:10].tolist()
        raise UnknownIdError(f"unknown {kind} id(s): {unknown}; use {kind} ids that occur in the data")
    return pos.astype(np.int64)


def remap_ids(raw: pd.Series, extra: pd.Series | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous indices for raw ids (ratings ids plus ids that appear only in a side table).

    Returns ``(index per row of raw, sorted unique raw ids)``.
    """
    values = raw if extra is None else pd.concat([raw, extra], ignore_index=True)
    uniques = np.sort(pd.unique(values.to_numpy()))
    codes = pd.Index(uniques).get_indexer(raw.to_numpy())
    return codes.astype(np.int64), uniques
