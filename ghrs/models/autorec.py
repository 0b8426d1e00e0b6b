"""Item-based AutoRec (Sedhain et al., WWW 2015) as a :class:`~ghrs.models.base.Recommender` (``model=autorec``).

Each item is the vector of its ratings over the training users, r_i (n_users,) with unobserved entries 0.
An autoencoder ``h(r) = W2 sigmoid(W1 r + b1) + b2`` is trained to reconstruct the *observed* entries
only (masked squared error, L2 penalty ``reg / 2 * (|W1|^2 + |W2|^2)`` in the paper's sum-over-ratings
scale); the prediction of (u, i) is ``h(r_i)[u]``. The hidden layer is an item code (``item_codes_``)
the hybrid can reuse. Items without training ratings get the global mean.

At prediction time the input vectors are rebuilt from the history (``set_history``), so revealed ratings
of users without training ratings enter the items' inputs (the network is not refitted). Users beyond
the fit-time user count have no input or output unit: they get the item mean (no fold-in).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import torch
from torch import nn

from ghrs.data.dataset import RatingsDataset
from ghrs.errors import UserError
from ghrs.models.base import Recommender

log = logging.getLogger(__name__)


def _item_matrix(ratings: pd.DataFrame, n_items: int, n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_items, n_users) ratings (0 where unobserved) and the 0/1 mask; users >= n_users are dropped."""
    keep = ratings["user"].to_numpy() < n_users
    i = torch.as_tensor(ratings["item"].to_numpy()[keep])
    u = torch.as_tensor(ratings["user"].to_numpy()[keep])
    r = torch.zeros(n_items, n_users)
    m = torch.zeros(n_items, n_users)
    r[i, u] = torch.as_tensor(ratings["rating"].to_numpy(np.float32)[keep])
    m[i, u] = 1.0
    return r, m


class AutoRecRecommender(Recommender):
    """Item-based AutoRec.

    Args:
        hidden: hidden units (the item code's width).
        reg: L2 strength in the paper's scale (objective = sum of squared errors + reg/2 |W|^2).
        epochs: passes over the items (fixed: chosen on a validation carve, see NOTES.md).
        lr: Adam learning rate.
        batch_size: items per step.
        seed: weight init and item shuffling (a private generator; the global RNG is untouched).
        threads: torch threads while fitting (1 is robust on a busy machine; None = torch's setting).
    """

    def __init__(self, hidden: int = 500, reg: float = 100.0, epochs: int = 60, lr: float = 1e-3,
                 batch_size: int = 256, seed: int = 0, threads: int | None = 1):
        if hidden < 1 or epochs < 1 or batch_size < 1 or reg < 0 or lr <= 0:
            raise UserError(f"autorec: hidden, epochs, batch_size >= 1, reg >= 0 and lr > 0 required, got "
                            f"hidden={hidden}, epochs={epochs}, batch_size={batch_size}, reg={reg}, lr={lr}")
        self.hidden, self.reg, self.epochs, self.lr = int(hidden), float(reg), int(epochs), float(lr)
        self.batch_size, self.seed, self.threads = int(batch_size), int(seed), threads

    def fit(self, dataset: RatingsDataset, train: pd.DataFrame, valid: pd.DataFrame | None = None,
            run_dir: Path | None = None) -> Self:
        self.dataset = dataset
        n_users, n_items = dataset.n_users, dataset.n_items
        self.n_users_ = n_users
        self.mu_ = float(train["rating"].mean())
        r, m = _item_matrix(train, n_items, n_users)
        n_obs = float(m.sum())
        gen = torch.Generator().manual_seed(self.seed)
        self.encoder_ = nn.Linear(n_users, self.hidden)
        self.decoder_ = nn.Linear(self.hidden, n_users)
        with torch.no_grad():  # deterministic init from the private generator
            for layer in (self.encoder_, self.decoder_):
                bound = 1.0 / np.sqrt(layer.in_features)
                layer.weight.copy_(torch.empty_like(layer.weight).uniform_(-bound, bound, generator=gen))
                layer.bias.zero_()
        params = [*self.encoder_.parameters(), *self.decoder_.parameters()]
        opt = torch.optim.Adam(params, lr=self.lr)
        rated = torch.as_tensor(np.flatnonzero(m.sum(1).numpy() > 0))
        threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            self.losses_ = []
            for _ in range(self.epochs):
                perm = rated[torch.randperm(len(rated), generator=gen)]
                total = 0.0
                for s in range(0, len(perm), self.batch_size):
                    idx = perm[s : s + self.batch_size]
                    err = ((self._forward(r[idx]) - r[idx]) * m[idx]).pow(2).sum()
                    # per-rating scale: the batch's share of the squared error + its share of the penalty
                    penalty = self.reg / 2 * (self.encoder_.weight.pow(2).sum() + self.decoder_.weight.pow(2).sum())
                    loss = (err + penalty * len(idx) / len(rated)) / n_obs * (len(rated) / len(idx))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(err.detach())
                self.losses_.append(total / n_obs)
        finally:
            torch.set_num_threads(threads)
        log.info("autorec %d -> %d: train MSE %.4f -> %.4f over %d epochs", n_users, self.hidden,
                 self.losses_[0], self.losses_[-1], self.epochs)
        self.set_history(train)
        return self

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, n_users) item rating vectors -> (B, n_users) reconstructions."""
        return self.decoder_(torch.sigmoid(self.encoder_(x)))

    @torch.no_grad()
    def set_history(self, history: pd.DataFrame) -> None:
        """Recompute every item's reconstruction (n_items, n_users) from ``history`` (no refit)."""
        self.history = history
        r, m = _item_matrix(history, self.dataset.n_items, self.n_users_)
        self.item_codes_ = torch.sigmoid(self.encoder_(r)).numpy()  # (n_items, hidden)
        self.recon_ = self.decoder_(torch.as_tensor(self.item_codes_)).numpy()  # (n_items, n_users)
        counts = np.bincount(history["item"].to_numpy(), minlength=self.dataset.n_items)
        self.item_mean_ = np.where(counts > 0, np.bincount(history["item"].to_numpy(),
                                                           history["rating"].to_numpy(np.float64),
                                                           self.dataset.n_items) / np.maximum(counts, 1), self.mu_)
        self.rated_ = m.sum(1).numpy() > 0

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        known = users < self.n_users_
        pred = self.item_mean_[items].copy()
        ok = known & self.rated_[items]
        pred[ok] = self.recon_[items[ok], users[ok]]
        pred[~self.rated_[items]] = self.mu_
        return self.clip(pred)

    def _grow_users(self, n_old: int, n_new: int) -> None:
        """Users added after fit have no unit in the network: they are predicted with item means."""
        self.set_history(self.history)
