"""The estimator interface every recommender in ``ghrs.models`` follows (scikit-learn style)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
import pandas as pd
import torch

from ghrs.data.dataset import RatingsDataset
from ghrs.errors import ConfigError

if TYPE_CHECKING:
    from ghrs.features.user_features import SideEncoder


class Recommender:
    """Base class: ``fit`` on training ratings, then ``predict`` ratings and ``score`` items for ranking.

    Protocol (what the pipeline, evaluation and the CLI rely on):

    - ``fit(dataset, train, valid=None, run_dir=None)``: learn from ``train`` only (a slice of
      ``dataset.ratings``: columns user, item, rating, timestamp). The dataset is passed for its side
      tables and sizes; its other ratings must not be used (leakage). ``valid`` may drive early
      stopping. ``run_dir`` is where iterative models keep checkpoints (may be ``None``).
    - ``set_history(history)``: the interactions the model may condition on at prediction time
      (training ratings + a cold user's revealed ratings + the validation item before a temporal test).
      It never refits: non-sequential models use it only to fold in users or items unseen by ``fit``;
      sequence models read it as each user's input sequence.
    - ``predict(users, items) -> (n,) float``: rating estimates clipped to the rating scale.
    - ``score(users) -> (len(users), n_items) float``: ranking scores over all items (higher is better);
      by default the predicted ratings.
    """

    dataset: RatingsDataset
    history: pd.DataFrame
    predicts_ratings: bool = True  # False for ranking-only models (no RMSE/MAE)

    def fit(
        self,
        dataset: RatingsDataset,
        train: pd.DataFrame,
        valid: pd.DataFrame | None = None,
        run_dir: Path | None = None,
    ) -> Self:
        raise NotImplementedError

    def set_history(self, history: pd.DataFrame) -> None:
        self.history = history

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def add_users(self, raw_ids, side: pd.DataFrame | None = None, side_unknown: str = "error") -> np.ndarray:
        """Register users the dataset has never seen (cold start at serving time).

        ``side``: optional side information, one row per new user in ``raw_ids`` order, columns as in
        ``dataset.users``. Values the model's side encoder never saw in training are an error, or with
        ``side_unknown="ignore"`` a logged warning. Returns the new users' indices; follow with
        ``set_history`` to give them ratings. Models with per-user state implement ``_grow_users``.
        """
        ds = self.dataset
        raw = np.asarray(raw_ids, dtype=ds.user_ids.dtype)
        known = pd.Index(ds.user_ids).get_indexer(raw) >= 0
        if known.any():
            raise ConfigError(f"user id(s) {raw[known].tolist()} already exist")
        rows = pd.DataFrame(index=range(len(raw)), columns=ds.users.columns)
        if side is not None:
            unknown_cols = set(side.columns) - set(ds.users.columns) - {"id"}
            if unknown_cols:
                raise ConfigError(f"side info has columns {sorted(unknown_cols)} the model does not know; "
                                 f"known: {list(ds.users.columns)}")
            for col in side.columns.intersection(ds.users.columns):
                rows[col] = side[col].to_numpy()
            encoder = self.side_encoder()
            if encoder is not None:
                encoder.check(side.drop(columns=["id"], errors="ignore"), side_unknown)
        for col in rows.columns:  # keep numeric side columns numeric (missing values become NaN)
            if pd.api.types.is_numeric_dtype(ds.users[col]):
                rows[col] = pd.to_numeric(rows[col], errors="coerce")
        users = pd.concat([ds.users, rows], ignore_index=True)
        n_old = ds.n_users
        self.dataset = replace(ds, user_ids=np.concatenate([ds.user_ids, raw]), users=users)
        self._grow_users(n_old, self.dataset.n_users)
        return np.arange(n_old, self.dataset.n_users)

    def side_encoder(self) -> SideEncoder | None:
        """The fitted user side encoder (``check(table, policy)``), or None when side info is not used."""
        return None

    def _grow_users(self, n_old: int, n_new: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot fold in users unseen at training time")

    def observe(self, interactions: pd.DataFrame) -> None:
        """Append new interactions (user, item, rating, timestamp indices) to the history the model
        conditions on. Sequence models override this to update a user's state with one recurrent step."""
        self.set_history(pd.concat([self.history, interactions], ignore_index=True))

    def score(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        n_items = self.dataset.n_items
        u = np.repeat(users, n_items)
        i = np.tile(np.arange(n_items, dtype=np.int64), len(users))
        return self.predict(u, i).reshape(len(users), n_items)

    def score_tensor(self, users: np.ndarray) -> torch.Tensor:
        """``score`` as a (len(users), n_items) tensor on the device the model computes on (torch models
        override it so the full-ranking evaluation stays on their device)."""
        return torch.as_tensor(np.asarray(self.score(users)))

    def save_artifacts(self, run_dir: Path) -> None:
        """Write model-specific plots or tables into ``run_dir`` (optional)."""

    def clip(self, pred: np.ndarray) -> np.ndarray:
        lo, hi = self.dataset.rating_scale
        return np.clip(pred, lo, hi).astype(np.float32)
