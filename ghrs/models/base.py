"""The estimator interface every recommender in ``ghrs.models`` follows (scikit-learn style)."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd

from ghrs.data.dataset import RatingsDataset


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

    def score(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        n_items = self.dataset.n_items
        u = np.repeat(users, n_items)
        i = np.tile(np.arange(n_items, dtype=np.int64), len(users))
        return self.predict(u, i).reshape(len(users), n_items)

    def save_artifacts(self, run_dir: Path) -> None:
        """Write model-specific plots or tables into ``run_dir`` (optional)."""

    def clip(self, pred: np.ndarray) -> np.ndarray:
        lo, hi = self.dataset.rating_scale
        return np.clip(pred, lo, hi).astype(np.float32)
