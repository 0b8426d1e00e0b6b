"""Turn a side table (any columns) into a numeric feature matrix.

Rules (the same for MovieLens and user-supplied CSV side tables):
- numeric columns are used as numbers (standardised; missing values -> column mean, plus nothing else);
- string columns whose values contain ``|`` are multi-hot (``Action|Comedy``);
- other string columns are one-hot, unless they have more than ``max_categories`` distinct values
  (e.g. zip codes, free text), in which case they are skipped with a log line;
- ``title`` (display only) and ``id`` columns are never features.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

NON_FEATURE_COLUMNS = frozenset({"id", "title"})


def encode_side_table(
    table: pd.DataFrame, max_categories: int = 64, exclude: tuple[str, ...] = ()
) -> tuple[np.ndarray, list[str]]:
    """Encode ``table`` (one row per user or item index) as features.

    Returns ``(features (n_rows, n_features) float32, feature names)``; ``n_features`` may be 0.
    """
    blocks: list[np.ndarray] = []
    names: list[str] = []
    for col in table.columns:
        if col in NON_FEATURE_COLUMNS or col in exclude:
            continue
        values = table[col]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            x = values.astype(float).to_numpy()
            finite = np.isfinite(x)
            if not finite.any():
                continue
            mean, std = x[finite].mean(), x[finite].std()
            x = np.where(finite, x, mean)
            blocks.append(((x - mean) / (std if std > 0 else 1.0))[:, None])
            names.append(col)
            continue
        text = values.astype("string").fillna("")
        if text.str.contains("|", regex=False).any():
            dummies = text.str.get_dummies(sep="|")
        else:
            n_distinct = text[text != ""].nunique()
            if n_distinct > max_categories:
                log.info("side column '%s' skipped: %d distinct values > max_categories=%d", col, n_distinct, max_categories)
                continue
            dummies = pd.get_dummies(text[text != ""]).reindex(text.index, fill_value=False)
        blocks.append(dummies.to_numpy(dtype=np.float32))
        names.extend(f"{col}={v}" for v in dummies.columns)
    if not blocks:
        return np.zeros((len(table), 0), np.float32), []
    return np.concatenate(blocks, axis=1).astype(np.float32), names
