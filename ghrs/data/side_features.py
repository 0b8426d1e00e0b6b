"""Turn a side table (any columns) into a numeric feature matrix, fitted once and reused.

Rules (the same for MovieLens and user-supplied CSV side tables):
- numeric columns are used as numbers (missing values -> the training mean, then standardised, or
  min-max scaled with ``numeric="minmax"``);
- string columns whose values contain ``|`` are multi-hot (``Action|Comedy``);
- other string columns are one-hot, unless they have more than ``max_categories`` distinct values
  (e.g. zip codes, free text), in which case they are skipped with a log line;
- ``title`` (display only) and ``id`` columns are never features.

:class:`SideTableEncoder` fits a scikit-learn ``ColumnTransformer`` on the training rows; rows encoded
later (users folded in at serving time) get the training-time means, scales and vocabularies, so a
row encodes the same alone as inside the training table. Values the encoder has not seen (a category,
a token, a number outside the training range) encode as all-zero / clipped; :meth:`SideTableEncoder.check`
turns them into a :class:`~ghrs.errors.UserError` naming the column, the value and the known values, or
(policy ``ignore``) a logged warning.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from ghrs.errors import UserError

log = logging.getLogger(__name__)

NON_FEATURE_COLUMNS = frozenset({"id", "title"})
SIDE_UNKNOWN_POLICIES = ("error", "ignore")
NUMERIC_SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler}


def _split_bar(text: str) -> list[str]:
    return [t for t in text.split("|") if t]


def _text(values: pd.Series) -> pd.Series:
    return values.astype("string").fillna("").str.strip()


class SideTableEncoder:
    """One-hot / multi-hot / scaled-number encoding of a side table, fitted on training rows.

    Args:
        max_categories: string columns with more distinct values are skipped.
        exclude: columns never used as features (besides ``id`` and ``title``).
        numeric: ``standard`` (StandardScaler) or ``minmax`` (MinMaxScaler) for numeric columns.
        categorical: columns encoded one-hot whatever their dtype (derived labels such as age bins).

    Fitted attributes: ``kinds_`` (column -> ``number`` | ``onehot`` | ``multihot``), ``vocab_``
    (column -> known values), ``range_`` (numeric column -> (min, max) seen in training),
    ``transformer_`` (the ColumnTransformer; None without features) and ``names_`` (feature names).
    """

    def __init__(self, max_categories: int = 64, exclude: tuple[str, ...] = (), numeric: str = "standard",
                 categorical: tuple[str, ...] = ()):
        if numeric not in NUMERIC_SCALERS:
            raise UserError(f"side numeric scaling must be one of {sorted(NUMERIC_SCALERS)}, got {numeric!r}")
        self.max_categories = max_categories
        self.exclude = exclude
        self.numeric = numeric
        self.categorical = categorical

    def _prepared(self, table: pd.DataFrame) -> pd.DataFrame:
        """The fitted columns with their fitted kind: numbers as float (NaN missing), strings stripped."""
        out = {}
        for col, kind in self.kinds_.items():
            values = table[col] if col in table.columns else pd.Series(pd.NA, index=table.index)
            if kind == "number":
                out[col] = pd.to_numeric(values, errors="coerce").astype(float)
            else:
                out[col] = _text(values).astype(object)
        return pd.DataFrame(out, index=table.index)

    def fit(self, table: pd.DataFrame) -> SideTableEncoder:
        self.kinds_: dict[str, str] = {}
        self.vocab_: dict[str, list[str]] = {}
        self.range_: dict[str, tuple[float, float]] = {}
        parts = []
        for col in table.columns:
            if col in NON_FEATURE_COLUMNS or col in self.exclude:
                continue
            values = table[col]
            numeric = pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values)
            if numeric and col not in self.categorical:
                x = values.astype(float).to_numpy()
                if not np.isfinite(x).any():
                    continue
                self.kinds_[col] = "number"
                self.range_[col] = (float(np.nanmin(x)), float(np.nanmax(x)))
                scaler = NUMERIC_SCALERS[self.numeric]()
                parts.append((col, make_pipeline(SimpleImputer(strategy="mean"), scaler), [col]))
                continue
            text = _text(values)
            if text.str.contains("|", regex=False).any():
                tokens = sorted({t for v in text for t in _split_bar(v)})
                self.kinds_[col], self.vocab_[col] = "multihot", tokens
                parts.append((col, CountVectorizer(tokenizer=_split_bar, token_pattern=None, lowercase=False,
                                                   binary=True, vocabulary=tokens, dtype=np.float32), col))
                continue
            cats = sorted(v for v in text.unique() if v != "")
            if len(cats) > self.max_categories:
                log.info("side column '%s' skipped: %d distinct values > max_categories=%d", col, len(cats),
                         self.max_categories)
                continue
            if not cats:
                continue
            self.kinds_[col], self.vocab_[col] = "onehot", cats
            # Missing values ("") and values unseen here encode as all-zero rows.
            parts.append((col, OneHotEncoder(categories=[cats], handle_unknown="ignore", sparse_output=False,
                                             dtype=np.float32), [col]))
        self.names_ = [n for col, kind in self.kinds_.items()
                       for n in ([col] if kind == "number" else [f"{col}={v}" for v in self.vocab_[col]])]
        self.transformer_ = None
        if parts:
            self.transformer_ = ColumnTransformer(parts, sparse_threshold=0.0).fit(self._prepared(table))
        return self

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        """(n_rows, n_features) float32 with the fitted statistics; numbers clipped to the training range."""
        if self.transformer_ is None:
            return np.zeros((len(table), 0), np.float32)
        prepared = self._prepared(table)
        for col, (lo, hi) in self.range_.items():
            prepared[col] = prepared[col].clip(lo, hi)
        return np.asarray(self.transformer_.transform(prepared), dtype=np.float32)

    def fit_transform(self, table: pd.DataFrame) -> np.ndarray:
        return self.fit(table).transform(table)

    def problems(self, table: pd.DataFrame) -> list[str]:
        """What in ``table`` the encoder has not seen: one phrase per (column, value)."""
        out = []
        prepared = self._prepared(table)
        for col, kind in self.kinds_.items():
            if col not in table.columns:
                continue
            raw = table[col]
            if kind == "number":
                bad_number = prepared[col].isna() & _text(raw).ne("")
                for v in raw[bad_number].unique().tolist():
                    out.append(f"{col}={v!r} is not a number")
                lo, hi = self.range_[col]
                for v in prepared[col][(prepared[col] < lo) | (prepared[col] > hi)].unique().tolist():
                    out.append(f"{col}={v:g} is outside the training range [{lo:g}, {hi:g}]")
                continue
            known = set(self.vocab_[col])
            values = prepared[col]
            seen = [t for v in values for t in (_split_bar(v) if kind == "multihot" else [v]) if t]
            for v in dict.fromkeys(t for t in seen if t not in known):
                shown = ", ".join(self.vocab_[col][:30]) + (", ..." if len(known) > 30 else "")
                out.append(f"{col}={v!r} was not seen in training (known: {shown})")
        return out

    def check(self, table: pd.DataFrame, policy: str = "error") -> None:
        """Raise (``error``) or log (``ignore``) the values of ``table`` the encoder has not seen."""
        check_policy(policy)
        report_side_problems(self.problems(table), policy)


def report_side_problems(problems: list[str], policy: str) -> None:
    """One UserError listing ``problems`` (policy ``error``), or one warning (``ignore``); nothing if none."""
    if not problems:
        return
    if policy == "error":
        raise UserError(f"side information: {'; '.join(problems)}; fix the value(s) or pass "
                        "side_unknown=ignore (unseen categories encode as zeros, numbers are clipped)")
    log.warning("side information (side_unknown=ignore): %s; unseen categories encode as zeros, numbers are "
                "clipped to the training range", "; ".join(problems))


def check_policy(policy: str) -> None:
    if policy not in SIDE_UNKNOWN_POLICIES:
        raise UserError(f"side_unknown must be one of {list(SIDE_UNKNOWN_POLICIES)}, got {policy!r}")


def encode_side_table(
    table: pd.DataFrame, max_categories: int = 64, exclude: tuple[str, ...] = ()
) -> tuple[np.ndarray, list[str]]:
    """Fit and apply a :class:`SideTableEncoder` on ``table`` (one row per user or item index).

    Returns ``(features (n_rows, n_features) float32, feature names)``; ``n_features`` may be 0.
    """
    enc = SideTableEncoder(max_categories, exclude)
    return enc.fit_transform(table), enc.names_
